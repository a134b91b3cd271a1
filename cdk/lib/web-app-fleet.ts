// The web app as a fleet: an Auto Scaling group of stateless instances, behind
// an internal Application Load Balancer unless the operator opts out.
//
// - Each instance: Amazon Linux 2023, no SSH key (operators use Session
//   Manager), IMDSv2 only with a hop limit of 2 so the container (one network
//   hop behind the host) can fetch the instance role's credentials. User data
//   installs Docker (retrying transient failures) and a systemd unit that pulls
//   the image from the stack's own ECR repository and serves: read-only,
//   capability-less container, app port published for the load balancer, admin
//   port (metrics, whoami) on the host's loopback only. The schema is migrated
//   before the fleet changes, once per image, by a one-shot instance with its
//   own role (lib/migration.ts): serving instances cannot read the owner secret.
//   The container's stdout goes to the app log group (Docker's awslogs driver),
//   one stream per instance: the dashboard reads the credential switch lines
//   from there.
// - The instance signals CloudFormation once its own `/ready` answers 200, so
//   creation and every rolling replacement wait for working instances. The load
//   balancer probes `/ready` too (traffic goes to instances that can log in),
//   but the group replaces an instance only when EC2 finds it broken: a
//   database outage (maintenance, failover) must not terminate the whole fleet.
// - The container is given the secret's ARN, the database endpoint it may
//   connect to and the region, never a credential.

import { Duration, Stack, Validations } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { APP_LOG_ACTIONS, ECR_PULL_ACTIONS, SSM_AGENT_ACTIONS } from './network';
import { functionLogGroup, secretsKeyStatement } from './rotation';
import type { CpuArchitecture } from './settings';

export interface WebAppFleetProps {
  readonly vpc: ec2.IVpc;
  readonly subnets: ec2.SubnetSelection;
  readonly securityGroup: ec2.ISecurityGroup;
  /** The load balancer's group; none when the operator opted out of the load balancer. */
  readonly loadBalancerSecurityGroup?: ec2.ISecurityGroup;
  /** The runtime login (APP_SECRET_ID). */
  readonly appSecret: secretsmanager.ISecret;
  /** APP_DB_ENDPOINTS: the `host:port` the app may connect to (the instance's endpoint). */
  readonly dbEndpoints: string;
  readonly appPort: number;
  readonly adminPort: number;
  readonly listenerPort: number;
  /** The image in the stack's own repository (lib/image-registry.ts), the only one the instances pull from. */
  readonly imageUri: string;
  readonly imageRepositoryArn: string;
  /** Session Manager's agent permissions (its endpoints exist only then). */
  readonly sessionManager: boolean;
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

/**
 * A shell function user data defines: run a command up to 5 times, 10, 20, 30,
 * 40 s apart. Package mirrors and registries have transient failures; one must
 * not roll the whole stack (the database included) back.
 */
export const RETRY_FUNCTION =
  'retry() { local n; for n in 1 2 3 4 5; do "$@" && return 0; echo "retry $n: $*" >&2; sleep $((n * 10)); done; "$@"; }';

const CA_ON_HOST = '/etc/pki/rds/bundle.pem';
const CA_IN_CONTAINER = '/etc/rds-ca/bundle.pem';

export class WebAppFleet extends Construct {
  readonly group: autoscaling.AutoScalingGroup;
  readonly launchTemplate: ec2.LaunchTemplate;
  readonly loadBalancer?: elbv2.ApplicationLoadBalancer;
  readonly listener?: elbv2.ApplicationListener;
  readonly targetGroup?: elbv2.ApplicationTargetGroup;
  readonly role: iam.Role;
  /** The app's stdout, one stream per instance (and `<instance>-migrate` for the schema step). */
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: WebAppFleetProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const arm = props.architecture === 'arm64';

    this.logGroup = functionLogGroup(this, 'AppLogs', props.logRetentionDays, props.encryptionKey);

    const statements = [
      new iam.PolicyStatement({
        sid: 'ReadTheAppSecret',
        actions: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'],
        resources: [props.appSecret.secretArn],
      }),
      new iam.PolicyStatement({
        sid: 'PullTheAppImage',
        actions: [...ECR_PULL_ACTIONS],
        resources: [props.imageRepositoryArn],
      }),
      new iam.PolicyStatement({ sid: 'LogInToEcr', actions: ['ecr:GetAuthorizationToken'], resources: ['*'] }),
      ...(props.sessionManager
        ? [
            new iam.PolicyStatement({
              sid: 'SessionManager',
              actions: [...SSM_AGENT_ACTIONS.ssm, ...SSM_AGENT_ACTIONS.ssmmessages],
              resources: ['*'],
            }),
          ]
        : []),
      new iam.PolicyStatement({ sid: 'WriteTheAppLog', actions: [...APP_LOG_ACTIONS], resources: [this.logGroup.logGroupArn] }),
      // cloudformation:SignalResource on this stack is added by the group itself (signals, below).
    ];
    if (props.encryptionKey) {
      statements.push(
        secretsKeyStatement(props.encryptionKey, stack.region, ['kms:Decrypt'], 'DecryptTheSecretsThroughSecretsManager'),
      );
    }
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'Web app instances: read the app secret, pull the app image, Session Manager, app log, boot signal',
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
      blockDevices: [encryptedRootVolume(props.encryptionKey)],
    });

    this.group = new autoscaling.AutoScalingGroup(this, 'Group', {
      vpc: props.vpc,
      vpcSubnets: props.subnets,
      launchTemplate: this.launchTemplate,
      minCapacity: props.fleetSize,
      // One above the size: a rolling replacement starts the new instance
      // before it stops an old one (MinInstancesInService = the size).
      maxCapacity: props.fleetSize + 1,
      // EC2 status checks only: the load balancer's /ready logs in to
      // PostgreSQL, and replacing instances for a database outage would
      // terminate the whole fleet during every failover or maintenance.
      healthChecks: autoscaling.HealthChecks.ec2({ gracePeriod: BOOT_TIMEOUT }),
      // GroupInServiceInstances and friends, for the in-service alarm.
      groupMetrics: [autoscaling.GroupMetrics.all()],
      signals: autoscaling.Signals.waitForMinCapacity({ timeout: BOOT_TIMEOUT }),
      updatePolicy: autoscaling.UpdatePolicy.rollingUpdate({
        maxBatchSize: 1,
        minInstancesInService: props.fleetSize,
        waitOnResourceSignals: true,
        pauseTime: BOOT_TIMEOUT,
      }),
    });
    userData.addCommands(...this.bootScript(props));

    if (props.loadBalancerSecurityGroup) {
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
          // Database-backed readiness: an instance that cannot log in gets no
          // traffic (routing only; the group does not act on it).
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
    }
    Validations.of(this.group).acknowledge(
      {
        id: 'AwsSolutions-AS3',
        reason:
          'Scaling events are not e-mailed: the group has a fixed size, and failed boots fail the deployment ' +
          '(creation and rolling replacement wait for each instance to signal a 200 on /ready); an alarm watches the ' +
          'in-service count.',
      },
    );
  }

  private bootScript(props: WebAppFleetProps): string[] {
    const stack = Stack.of(this);
    const region = stack.region;
    const groupLogicalId = stack.getLogicalId(this.group.node.defaultChild as autoscaling.CfnAutoScalingGroup);
    const serve = [
      '/usr/bin/docker run --rm --name web-app',
      ...containerLogTo(region, this.logGroup.logGroupName, '${INSTANCE_ID}'),
      ...containerCommon(region, props.dbEndpoints),
      `--publish ${props.appPort}:${props.appPort}`,
      // The admin listener (metrics, whoami) reaches the host's loopback only.
      `--publish 127.0.0.1:${props.adminPort}:${props.adminPort}`,
      `--env APP_SECRET_ID=${props.appSecret.secretArn}`,
      `--env APP_LISTEN_ADDR=0.0.0.0:${props.appPort}`,
      `--env APP_ADMIN_LISTEN_ADDR=0.0.0.0:${props.adminPort}`,
      props.imageUri,
    ].join(' ');
    return [
      ...hostPreamble(stack, groupLogicalId, props.dbCaBundlePem),
      'cat > /etc/systemd/system/web-app.service <<UNIT',
      '[Unit]',
      'Description=web app container',
      'After=docker.service network-online.target',
      'Requires=docker.service',
      '[Service]',
      'Restart=always',
      'RestartSec=5',
      'TimeoutStartSec=600',
      '# Log in to ECR (a 12-hour token) and pull before every start.',
      `ExecStartPre=/bin/sh -c '${ecrLogin(stack)}'`,
      `ExecStartPre=/usr/bin/docker pull ${props.imageUri}`,
      'ExecStartPre=-/usr/bin/docker rm -f web-app',
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

const CA_DIR_ON_HOST = CA_ON_HOST.replace(/\/[^/]+$/, '');

/** `docker login` to this account's registry with the instance role. */
/** The instances' root volume: 16 GiB gp3, encrypted (with the stack key when there is one), gone with the instance. */
export function encryptedRootVolume(encryptionKey?: kms.IKey): ec2.BlockDevice {
  return {
    deviceName: '/dev/xvda',
    volume: ec2.BlockDeviceVolume.ebs(16, {
      encrypted: true,
      kmsKey: encryptionKey,
      volumeType: ec2.EbsDeviceVolumeType.GP3,
      deleteOnTermination: true,
    }),
  };
}

export function ecrLogin(stack: Stack): string {
  const registry = `${stack.account}.dkr.ecr.${stack.region}.${stack.urlSuffix}`;
  return `aws ecr get-login-password --region ${stack.region} | docker login --username AWS --password-stdin ${registry}`;
}

/**
 * The host's first steps, shared by the fleet and the migration instance:
 * instance id, a CloudFormation signal function for `logicalId` (FAILURE on
 * any error), Docker installed with retries, the RDS roots written out.
 */
export function hostPreamble(stack: Stack, logicalId: string, dbCaBundlePem: string): string[] {
  const imds = 'http://169.254.169.254/latest';
  return [
    'set -euo pipefail',
    RETRY_FUNCTION,
    `TOKEN=$(retry curl -sf -X PUT ${imds}/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')`,
    `INSTANCE_ID=$(retry curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" ${imds}/meta-data/instance-id)`,
    // Creation and rolling replacements wait for this signal (or its absence).
    `signal() { retry aws cloudformation signal-resource --region ${stack.region} --stack-name ${stack.stackName} ` +
      `--logical-resource-id ${logicalId} --unique-id "$INSTANCE_ID" --status "$1"; }`,
    "trap 'signal FAILURE' ERR",
    'retry dnf install -y docker',
    'retry systemctl enable --now docker',
    `install -d -m 0755 ${CA_DIR_ON_HOST}`,
    `cat > ${CA_ON_HOST} <<'PEM'`,
    dbCaBundlePem.trimEnd(),
    'PEM',
  ];
}

/** Docker's awslogs driver, one stream per instance (`$INSTANCE_ID` expands on the host). */
export function containerLogTo(region: string, logGroupName: string, stream: string): string[] {
  return [
    '--log-driver awslogs',
    `--log-opt awslogs-region=${region}`,
    `--log-opt awslogs-group=${logGroupName}`,
    `--log-opt awslogs-stream=${stream}`,
    '--log-opt mode=non-blocking',
  ];
}

/** What every container of the image gets: the confinement, the RDS roots, verified TLS, the pinned endpoint. */
export function containerCommon(region: string, dbEndpoints: string): string[] {
  return [
    ...CONTAINER_HARDENING,
    '--tmpfs /tmp:rw,noexec,nosuid,size=16m',
    `--volume ${CA_ON_HOST}:${CA_IN_CONTAINER}:ro`,
    `--env AWS_REGION=${region}`,
    `--env APP_DB_CA_BUNDLE=${CA_IN_CONTAINER}`,
    '--env APP_DB_TLS=verify-full',
    `--env APP_DB_ENDPOINTS=${dbEndpoints}`,
  ];
}
