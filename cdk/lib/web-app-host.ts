// The EC2 instance that runs the web app container.
//
// Amazon Linux 2023, no SSH key (operators use SSM Session Manager), IMDSv2
// only with a hop limit of 2 so the container (one network hop behind the
// host) can fetch the instance role's credentials. User data installs Docker,
// pulls the image built from the repository's Dockerfile and runs it under
// systemd as a read-only, capability-less container. The container is given
// the secret's ARN and the region, never a credential.

import { IgnoreMode, Stack, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import type { CpuArchitecture } from './settings';

export interface WebAppHostProps {
  readonly vpc: ec2.IVpc;
  readonly subnet: ec2.ISubnet;
  readonly securityGroup: ec2.ISecurityGroup;
  readonly appSecret: secretsmanager.ISecret;
  readonly appPort: number;
  readonly imageDirectory: string;
  readonly architecture: CpuArchitecture;
  readonly instanceType: string;
  /** PEM roots for the database's certificate, mounted read-only into the container. */
  readonly dbCaBundlePem: string;
  /** Configure the registry to scan the image repository on push (account-wide setting). */
  readonly scanImagesOnPush: boolean;
  readonly encryptionKey?: kms.IKey;
}

/** Paths of the build context never sent to Docker (nor hashed, nor staged). */
export const IMAGE_CONTEXT_EXCLUDES = ['.git', 'target', 'cdk', '**/node_modules', '**/cdk.out', '.ci', 'docs'];

/** The flags that confine the container; tests and the threat model refer to them. */
export const CONTAINER_HARDENING = ['--read-only', '--cap-drop ALL', '--security-opt no-new-privileges'];

const CA_ON_HOST = '/etc/pki/rds/bundle.pem';
const CA_IN_CONTAINER = '/etc/rds-ca/bundle.pem';

export class WebAppHost extends Construct {
  readonly instance: ec2.Instance;
  readonly role: iam.Role;
  readonly image: ecrAssets.DockerImageAsset;

  constructor(scope: Construct, id: string, props: WebAppHostProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const arm = props.architecture === 'arm64';

    this.image = new ecrAssets.DockerImageAsset(this, 'Image', {
      directory: props.imageDirectory,
      file: 'Dockerfile',
      platform: arm ? ecrAssets.Platform.LINUX_ARM64 : ecrAssets.Platform.LINUX_AMD64,
      ignoreMode: IgnoreMode.DOCKER,
      exclude: IMAGE_CONTEXT_EXCLUDES,
    });

    // The image goes to the CDK bootstrap's container-assets repository, which
    // this stack does not own and whose bootstrap template does not scan. Scan
    // on push is therefore set on the registry, for that repository only. The
    // registry scanning configuration is one per account and region: deploying
    // replaces an existing one, hence the opt-out (-c scanImagesOnPush=false).
    if (props.scanImagesOnPush) {
      new ecr.CfnRegistryScanningConfiguration(this, 'ScanOnPush', {
        scanType: 'BASIC',
        rules: [
          {
            scanFrequency: 'SCAN_ON_PUSH',
            repositoryFilters: [{ filter: this.image.repository.repositoryName, filterType: 'WILDCARD' }],
          },
        ],
      });
    }

    const statements = [
      new iam.PolicyStatement({
        sid: 'ReadTheAppSecret',
        actions: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'],
        resources: [props.appSecret.secretArn],
      }),
      new iam.PolicyStatement({
        sid: 'PullTheAppImage',
        actions: ['ecr:BatchCheckLayerAvailability', 'ecr:GetDownloadUrlForLayer', 'ecr:BatchGetImage'],
        resources: [this.image.repository.repositoryArn],
      }),
      new iam.PolicyStatement({
        sid: 'LogInToEcr',
        actions: ['ecr:GetAuthorizationToken'],
        resources: ['*'],
      }),
    ];
    if (props.encryptionKey) {
      statements.push(
        new iam.PolicyStatement({
          sid: 'DecryptTheSecretThroughSecretsManager',
          actions: ['kms:Decrypt'],
          resources: [props.encryptionKey.keyArn],
          conditions: { StringEquals: { 'kms:ViaService': `secretsmanager.${stack.region}.amazonaws.com` } },
        }),
      );
    }
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'Web app host: read the app secret, pull the app image, SSM core',
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('AmazonSSMManagedInstanceCore')],
      inlinePolicies: { WebApp: new iam.PolicyDocument({ statements }) },
    });
    Validations.of(this.role).acknowledge(
      {
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]',
        reason:
          'SSM core is how operators reach the instance without SSH; AWS maintains this policy as the SSM agent changes.',
      },
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason: 'ecr:GetAuthorizationToken has no resource to scope to; image pulls are limited to the app repository.',
      },
    );

    const userData = ec2.UserData.forLinux();
    userData.addCommands(...this.bootScript(props));

    this.instance = new ec2.Instance(this, 'Instance', {
      vpc: props.vpc,
      vpcSubnets: { subnets: [props.subnet] },
      securityGroup: props.securityGroup,
      instanceType: new ec2.InstanceType(props.instanceType),
      machineImage: ec2.MachineImage.latestAmazonLinux2023({
        cpuType: arm ? ec2.AmazonLinuxCpuType.ARM_64 : ec2.AmazonLinuxCpuType.X86_64,
      }),
      role: this.role,
      userData,
      // A new image (or user data) means a new instance: nothing on it is state.
      userDataCausesReplacement: true,
      httpTokens: ec2.HttpTokens.REQUIRED,
      httpEndpoint: true,
      // 2, not 1: the container's requests cross the Docker bridge, one hop more.
      httpPutResponseHopLimit: 2,
      associatePublicIpAddress: false,
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
    Validations.of(this.instance).acknowledge(
      {
        id: 'AwsSolutions-EC28',
        reason: 'One stateless instance; basic 5-minute metrics are enough and detailed monitoring costs extra.',
      },
      {
        id: 'AwsSolutions-EC29',
        reason:
          'Stateless by design: a new image deliberately replaces the instance (userDataCausesReplacement), ' +
          'so termination protection would block every deployment.',
      },
    );
  }

  private bootScript(props: WebAppHostProps): string[] {
    const stack = Stack.of(this);
    const region = stack.region;
    const registry = `${stack.account}.dkr.ecr.${region}.${stack.urlSuffix}`;
    const image = this.image.imageUri;
    const run = [
      '/usr/bin/docker run --rm --name web-app',
      ...CONTAINER_HARDENING,
      '--tmpfs /tmp:rw,noexec,nosuid,size=16m',
      `--publish ${props.appPort}:${props.appPort}`,
      `--volume ${CA_ON_HOST}:${CA_IN_CONTAINER}:ro`,
      `--env APP_SECRET_ID=${props.appSecret.secretArn}`,
      `--env AWS_REGION=${region}`,
      `--env APP_LISTEN_ADDR=0.0.0.0:${props.appPort}`,
      `--env APP_DB_CA_BUNDLE=${CA_IN_CONTAINER}`,
      image,
    ].join(' ');
    return [
      'set -euo pipefail',
      'dnf install -y docker',
      'systemctl enable --now docker',
      `install -d -m 0755 ${CA_ON_HOST.replace(/\/[^/]+$/, '')}`,
      `cat > ${CA_ON_HOST} <<'PEM'`,
      props.dbCaBundlePem.trimEnd(),
      'PEM',
      'cat > /etc/systemd/system/web-app.service <<UNIT',
      '[Unit]',
      'Description=web app container',
      'After=docker.service network-online.target',
      'Requires=docker.service',
      '[Service]',
      'Restart=always',
      'RestartSec=5',
      '# Log in to ECR (a 12-hour token) and pull before every start.',
      `ExecStartPre=/bin/sh -c 'aws ecr get-login-password --region ${region} | docker login --username AWS --password-stdin ${registry}'`,
      `ExecStartPre=/usr/bin/docker pull ${image}`,
      'ExecStartPre=-/usr/bin/docker rm -f web-app',
      `ExecStart=${run}`,
      'ExecStop=/usr/bin/docker stop web-app',
      '[Install]',
      'WantedBy=multi-user.target',
      'UNIT',
      'systemctl daemon-reload',
      'systemctl enable --now web-app.service',
    ];
  }
}
