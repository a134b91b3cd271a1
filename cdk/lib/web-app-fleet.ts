// The web app as a fleet: an Auto Scaling group of stateless instances behind
// an internal Application Load Balancer.
//
// - Each instance: Amazon Linux 2023, no SSH key (operators use Session
//   Manager), IMDSv2 only with a hop limit of 2 so the container (one network
//   hop behind the host) can fetch the instance role's credentials. User data
//   installs Docker and a systemd unit that pulls the image from the stack's
//   own ECR repository, runs `web-app migrate` with the owner's login, then
//   serves: read-only, capability-less container, app port published for the
//   load balancer, admin port (metrics, whoami) on the host's loopback only.
//   The container's stdout goes to the app log group (Docker's awslogs driver),
//   one stream per instance: the dashboard reads the credential switch lines
//   from there.
// - The instance signals CloudFormation once its own `/ready` answers 200, so
//   creation and every rolling replacement wait for working instances; the
//   load balancer probes `/ready` too, and the group replaces instances the
//   load balancer finds unhealthy (ELB health checks).
// - The container is given the secrets' ARNs and the region, never a credential.

import { Duration, IgnoreMode, Stack, Validations } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { APP_LOG_ACTIONS, ECR_PULL_ACTIONS, SSM_AGENT_ACTIONS } from './network';
import { functionLogGroup } from './rotation';
import type { CpuArchitecture } from './settings';

export interface WebAppFleetProps {
  readonly vpc: ec2.IVpc;
  readonly subnets: ec2.SubnetSelection;
  readonly securityGroup: ec2.ISecurityGroup;
  readonly loadBalancerSecurityGroup: ec2.ISecurityGroup;
  /** The runtime login (APP_SECRET_ID). */
  readonly appSecret: secretsmanager.ISecret;
  /** The schema owner's login, for `web-app migrate` (APP_OWNER_SECRET_ID). */
  readonly ownerSecret: secretsmanager.ISecret;
  readonly appPort: number;
  readonly adminPort: number;
  readonly listenerPort: number;
  /** Docker build context: the repository root, trimmed by its .dockerignore. */
  readonly imageDirectory: string;
  /** The stack's own repository (lib/image-registry.ts), the only one the instances pull from. */
  readonly imageRepositoryArn: string;
  readonly architecture: CpuArchitecture;
  readonly instanceType: string;
  readonly fleetSize: number;
  /** PEM roots for the database's certificate, mounted read-only into the container. */
  readonly dbCaBundlePem: string;
  readonly logRetentionDays: number;
  readonly encryptionKey?: kms.IKey;
}

/** The flags that confine the container; tests and the threat model refer to them. */
export const CONTAINER_HARDENING = ['--read-only', '--cap-drop ALL', '--security-opt no-new-privileges'];

/** How long a new instance may take from launch to a 200 on /ready (dnf, pull, migrate, start). */
export const BOOT_TIMEOUT = Duration.minutes(15);

const CA_ON_HOST = '/etc/pki/rds/bundle.pem';
const CA_IN_CONTAINER = '/etc/rds-ca/bundle.pem';

export class WebAppFleet extends Construct {
  readonly group: autoscaling.AutoScalingGroup;
  readonly launchTemplate: ec2.LaunchTemplate;
  readonly loadBalancer: elbv2.ApplicationLoadBalancer;
  readonly listener: elbv2.ApplicationListener;
  readonly targetGroup: elbv2.ApplicationTargetGroup;
  readonly role: iam.Role;
  readonly image: ecrAssets.DockerImageAsset;
  /** The app's stdout, one stream per instance (and `<instance>-migrate` for the schema step). */
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: WebAppFleetProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const arm = props.architecture === 'arm64';

    // The build context's .dockerignore lets in only what the image needs (the
    // workspace manifests, the lock file, web-app's and db-secret's sources); CDK
    // applies the same file when it hashes the context, so a change anywhere
    // else (tests, cdk, docs, the rotation function) changes neither the image
    // nor the launch template, and replaces no instance.
    this.image = new ecrAssets.DockerImageAsset(this, 'Image', {
      directory: props.imageDirectory,
      file: 'Dockerfile',
      platform: arm ? ecrAssets.Platform.LINUX_ARM64 : ecrAssets.Platform.LINUX_AMD64,
      ignoreMode: IgnoreMode.DOCKER,
    });

    this.logGroup = functionLogGroup(this, 'AppLogs', props.logRetentionDays, props.encryptionKey);

    const statements = [
      new iam.PolicyStatement({
        sid: 'ReadTheAppAndOwnerSecrets',
        actions: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'],
        resources: [props.appSecret.secretArn, props.ownerSecret.secretArn],
      }),
      new iam.PolicyStatement({
        sid: 'PullTheAppImage',
        actions: [...ECR_PULL_ACTIONS],
        resources: [props.imageRepositoryArn],
      }),
      new iam.PolicyStatement({ sid: 'LogInToEcr', actions: ['ecr:GetAuthorizationToken'], resources: ['*'] }),
      new iam.PolicyStatement({
        sid: 'SessionManager',
        actions: [...SSM_AGENT_ACTIONS.ssm, ...SSM_AGENT_ACTIONS.ssmmessages],
        resources: ['*'],
      }),
      new iam.PolicyStatement({ sid: 'WriteTheAppLog', actions: [...APP_LOG_ACTIONS], resources: [this.logGroup.logGroupArn] }),
      // cloudformation:SignalResource on this stack is added by the group itself (signals, below).
    ];
    if (props.encryptionKey) {
      statements.push(
        new iam.PolicyStatement({
          sid: 'DecryptTheSecretsThroughSecretsManager',
          actions: ['kms:Decrypt'],
          resources: [props.encryptionKey.keyArn],
          conditions: { StringEquals: { 'kms:ViaService': `secretsmanager.${stack.region}.amazonaws.com` } },
        }),
      );
    }
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'Web app instances: read the app and owner secrets, pull the app image, Session Manager, app log, boot signal',
      inlinePolicies: { WebApp: new iam.PolicyDocument({ statements }) },
    });
    Validations.of(this.role).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'Only actions without a resource to scope to use "*": ecr:GetAuthorizationToken, ssm:UpdateInstanceInformation and the four ' +
        "ssmmessages channel actions (AWS's minimal Session Manager instance policy). Image pulls, secrets, logs and the " +
        'boot signal name their resources, and the VPC endpoints serve this role only.',
    });

    const userData = ec2.UserData.forLinux();
    this.launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      instanceType: new ec2.InstanceType(props.instanceType),
      machineImage: ec2.MachineImage.latestAmazonLinux2023({
        cpuType: arm ? ec2.AmazonLinuxCpuType.ARM_64 : ec2.AmazonLinuxCpuType.X86_64,
      }),
      role: this.role,
      securityGroup: props.securityGroup,
      userData,
      requireImdsv2: true,
      httpTokens: ec2.LaunchTemplateHttpTokens.REQUIRED,
      httpEndpoint: true,
      // 2, not 1: the container's requests cross the Docker bridge, one hop more.
      httpPutResponseHopLimit: 2,
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(16, {
            encrypted: true,
            kmsKey: props.encryptionKey,
            volumeType: ec2.EbsDeviceVolumeType.GP3,
            deleteOnTermination: true,
          }),
        },
      ],
    });

    this.group = new autoscaling.AutoScalingGroup(this, 'Group', {
      vpc: props.vpc,
      vpcSubnets: props.subnets,
      launchTemplate: this.launchTemplate,
      minCapacity: props.fleetSize,
      // One above the size: a rolling replacement starts the new instance
      // before it stops an old one (MinInstancesInService = the size).
      maxCapacity: props.fleetSize + 1,
      healthChecks: autoscaling.HealthChecks.withAdditionalChecks({
        additionalTypes: [autoscaling.AdditionalHealthCheckType.ELB],
        gracePeriod: BOOT_TIMEOUT,
      }),
      signals: autoscaling.Signals.waitForMinCapacity({ timeout: BOOT_TIMEOUT }),
      updatePolicy: autoscaling.UpdatePolicy.rollingUpdate({
        maxBatchSize: 1,
        minInstancesInService: props.fleetSize,
        waitOnResourceSignals: true,
        pauseTime: BOOT_TIMEOUT,
      }),
    });
    userData.addCommands(...this.bootScript(props));

    this.loadBalancer = new elbv2.ApplicationLoadBalancer(this, 'LoadBalancer', {
      vpc: props.vpc,
      vpcSubnets: props.subnets,
      internetFacing: false,
      securityGroup: props.loadBalancerSecurityGroup,
      dropInvalidHeaderFields: true,
    });
    this.listener = this.loadBalancer.addListener('Http', {
      port: props.listenerPort,
      protocol: elbv2.ApplicationProtocol.HTTP,
      // The security groups (lib/network.ts) say who may connect; no 0.0.0.0/0.
      open: false,
    });
    this.targetGroup = this.listener.addTargets('App', {
      port: props.appPort,
      protocol: elbv2.ApplicationProtocol.HTTP,
      targets: [this.group],
      deregistrationDelay: Duration.seconds(30),
      healthCheck: {
        // Database-backed readiness: an instance that cannot log in gets no traffic.
        path: '/ready',
        healthyHttpCodes: '200',
        interval: Duration.seconds(10),
        timeout: Duration.seconds(5),
        healthyThresholdCount: 2,
        unhealthyThresholdCount: 3,
      },
    });

    Validations.of(this.loadBalancer).acknowledge(
      {
        id: 'AwsSolutions-ELB2',
        reason:
          'No access logs: they need an S3 bucket outside this design. Every request is counted by the app itself ' +
          '(web_app_http_requests_total by route and status) and the load balancer 5xx and unhealthy-host metrics ' +
          'are on the dashboard with alarms.',
      },
    );
    Validations.of(this.group).acknowledge(
      {
        id: 'AwsSolutions-AS3',
        reason:
          'Scaling events are not e-mailed: the group has a fixed size, and failed boots fail the deployment ' +
          '(creation and rolling replacement wait for each instance to signal a 200 on /ready).',
      },
    );
  }

  private bootScript(props: WebAppFleetProps): string[] {
    const stack = Stack.of(this);
    const region = stack.region;
    const registry = `${stack.account}.dkr.ecr.${region}.${stack.urlSuffix}`;
    const image = this.image.imageUri;
    const groupLogicalId = stack.getLogicalId(this.group.node.defaultChild as autoscaling.CfnAutoScalingGroup);
    // One stream per instance in the app log group; $INSTANCE_ID is expanded
    // when user data writes the unit.
    const logTo = (stream: string) => [
      '--log-driver awslogs',
      `--log-opt awslogs-region=${region}`,
      `--log-opt awslogs-group=${this.logGroup.logGroupName}`,
      `--log-opt awslogs-stream=${stream}`,
      '--log-opt mode=non-blocking',
    ];
    const common = [
      ...CONTAINER_HARDENING,
      '--tmpfs /tmp:rw,noexec,nosuid,size=16m',
      `--volume ${CA_ON_HOST}:${CA_IN_CONTAINER}:ro`,
      `--env AWS_REGION=${region}`,
      `--env APP_DB_CA_BUNDLE=${CA_IN_CONTAINER}`,
      '--env APP_DB_TLS=verify-full',
    ];
    const migrate = [
      '/usr/bin/docker run --rm --name web-app-migrate',
      ...logTo('${INSTANCE_ID}-migrate'),
      ...common,
      `--env APP_OWNER_SECRET_ID=${props.ownerSecret.secretArn}`,
      image,
      'migrate',
    ].join(' ');
    const serve = [
      '/usr/bin/docker run --rm --name web-app',
      ...logTo('${INSTANCE_ID}'),
      ...common,
      `--publish ${props.appPort}:${props.appPort}`,
      // The admin listener (metrics, whoami) reaches the host's loopback only.
      `--publish 127.0.0.1:${props.adminPort}:${props.adminPort}`,
      `--env APP_SECRET_ID=${props.appSecret.secretArn}`,
      `--env APP_LISTEN_ADDR=0.0.0.0:${props.appPort}`,
      `--env APP_ADMIN_LISTEN_ADDR=0.0.0.0:${props.adminPort}`,
      image,
    ].join(' ');
    const imds = 'http://169.254.169.254/latest';
    return [
      'set -euo pipefail',
      `TOKEN=$(curl -sf -X PUT ${imds}/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')`,
      `INSTANCE_ID=$(curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" ${imds}/meta-data/instance-id)`,
      // Creation and rolling replacements wait for this signal (or its absence).
      `signal() { aws cloudformation signal-resource --region ${region} --stack-name ${stack.stackName} ` +
        `--logical-resource-id ${groupLogicalId} --unique-id "$INSTANCE_ID" --status "$1"; }`,
      "trap 'signal FAILURE' ERR",
      'dnf install -y docker',
      'systemctl enable --now docker',
      `install -d -m 0755 ${CA_ON_HOST.replace(/\/[^/]+$/, '')}`,
      `cat > ${CA_ON_HOST} <<'PEM'`,
      props.dbCaBundlePem.trimEnd(),
      'PEM',
      'cat > /etc/systemd/system/web-app.service <<UNIT',
      '[Unit]',
      'Description=web app container (schema migration, then serving)',
      'After=docker.service network-online.target',
      'Requires=docker.service',
      '[Service]',
      'Restart=always',
      'RestartSec=5',
      'TimeoutStartSec=600',
      '# Log in to ECR (a 12-hour token) and pull before every start.',
      `ExecStartPre=/bin/sh -c 'aws ecr get-login-password --region ${region} | docker login --username AWS --password-stdin ${registry}'`,
      `ExecStartPre=/usr/bin/docker pull ${image}`,
      'ExecStartPre=-/usr/bin/docker rm -f web-app',
      '# The schema first, as its owner; idempotent, so every start may run it.',
      `ExecStartPre=${migrate}`,
      `ExecStart=${serve}`,
      'ExecStop=/usr/bin/docker stop web-app',
      '[Install]',
      'WantedBy=multi-user.target',
      'UNIT',
      'systemctl daemon-reload',
      'systemctl enable --now web-app.service',
      `for _ in $(seq 120); do curl -sf -o /dev/null http://127.0.0.1:${props.appPort}/ready && break; sleep 5; done`,
      `curl -sf -o /dev/null http://127.0.0.1:${props.appPort}/ready`,
      'signal SUCCESS',
    ];
  }
}
