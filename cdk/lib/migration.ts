// `web-app migrate`, once per change of the image, outside the serving fleet.
//
// The schema belongs to `app_owner`, whose secret carries DDL rights; the
// serving instances log in as `app` (DML only) and cannot read the owner
// secret. A one-shot instance with a role of its own runs the migration:
//
// - Its launch template holds the image URI (tagged with the image's content
//   hash) in its user data, so a new image is a new template version, and a new
//   template version replaces the instance (AWS::EC2::Instance LaunchTemplate:
//   "Update requires: Replacement"). Deployments that do not change the image
//   leave it alone.
// - CloudFormation waits for its signal (a creation policy): migrate succeeded,
//   or the deployment fails and rolls back before any serving instance changes
//   (the fleet depends on this resource).
// - Then it stops itself (shutdown behaviour `stop`): it costs its root volume
//   only until the next migration replaces it. A stopped instance, unlike a
//   terminated one, still accepts CloudFormation's tag updates.

import { Duration, Stack, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { APP_LOG_ACTIONS, ECR_PULL_ACTIONS } from './network';
import { secretsKeyStatement } from './rotation';
import type { CpuArchitecture } from './settings';
import { containerCommon, containerLogTo, ecrLogin, encryptedRootVolume, hostPreamble } from './web-app-fleet';

export interface SchemaMigrationProps {
  readonly vpc: ec2.IVpc;
  readonly subnets: ec2.SubnetSelection;
  readonly securityGroup: ec2.ISecurityGroup;
  /** The schema owner's login (APP_OWNER_SECRET_ID). */
  readonly ownerSecret: secretsmanager.ISecret;
  readonly dbEndpoints: string;
  readonly imageUri: string;
  readonly imageRepositoryArn: string;
  readonly architecture: CpuArchitecture;
  readonly instanceType: string;
  readonly dbCaBundlePem: string;
  /** The app log group: the migration writes the stream `<instance id>-migrate`. */
  readonly logGroup: logs.ILogGroup;
  readonly encryptionKey?: kms.IKey;
}

/** How long the migration instance may take from launch to its signal. */
export const MIGRATION_TIMEOUT = Duration.minutes(20);

export class SchemaMigration extends Construct {
  readonly role: iam.Role;
  readonly launchTemplate: ec2.LaunchTemplate;
  readonly instance: ec2.CfnInstance;

  constructor(scope: Construct, id: string, props: SchemaMigrationProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const statements = [
      new iam.PolicyStatement({
        sid: 'ReadTheOwnerSecret',
        actions: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'],
        resources: [props.ownerSecret.secretArn],
      }),
      new iam.PolicyStatement({ sid: 'PullTheAppImage', actions: [...ECR_PULL_ACTIONS], resources: [props.imageRepositoryArn] }),
      new iam.PolicyStatement({ sid: 'LogInToEcr', actions: ['ecr:GetAuthorizationToken'], resources: ['*'] }),
      new iam.PolicyStatement({ sid: 'WriteTheAppLog', actions: [...APP_LOG_ACTIONS], resources: [props.logGroup.logGroupArn] }),
      new iam.PolicyStatement({ sid: 'SignalThisStack', actions: ['cloudformation:SignalResource'], resources: [stack.stackId] }),
    ];
    if (props.encryptionKey) {
      statements.push(
        secretsKeyStatement(props.encryptionKey, stack.region, ['kms:Decrypt'], 'DecryptTheSecretThroughSecretsManager'),
      );
    }
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'Schema migration instance: read the owner secret, pull the app image, write its log, signal the stack',
      inlinePolicies: { Migrate: new iam.PolicyDocument({ statements }) },
    });
    Validations.of(this.role).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'Only ecr:GetAuthorizationToken uses "*" (it has no resource); the secret, the image, the log and the signal are named.',
    });

    const userData = ec2.UserData.forLinux();
    this.launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      instanceType: new ec2.InstanceType(props.instanceType),
      machineImage: ec2.MachineImage.latestAmazonLinux2023({
        cpuType: props.architecture === 'arm64' ? ec2.AmazonLinuxCpuType.ARM_64 : ec2.AmazonLinuxCpuType.X86_64,
      }),
      role: this.role,
      securityGroup: props.securityGroup,
      userData,
      requireImdsv2: true,
      httpTokens: ec2.LaunchTemplateHttpTokens.REQUIRED,
      httpEndpoint: true,
      httpPutResponseHopLimit: 2,
      instanceInitiatedShutdownBehavior: ec2.InstanceInitiatedShutdownBehavior.STOP,
      blockDevices: [encryptedRootVolume(props.encryptionKey)],
    });
    this.instance = new ec2.CfnInstance(this, 'Instance', {
      launchTemplate: {
        launchTemplateId: this.launchTemplate.launchTemplateId,
        version: this.launchTemplate.latestVersionNumber,
      },
      subnetId: props.vpc.selectSubnets(props.subnets).subnetIds[0],
      monitoring: true,
      ebsOptimized: true,
    });
    this.instance.cfnOptions.creationPolicy = { resourceSignal: { count: 1, timeout: MIGRATION_TIMEOUT.toIsoString() } };

    const logicalId = stack.getLogicalId(this.instance);
    const migrate = [
      '/usr/bin/docker run --rm --name web-app-migrate',
      ...containerLogTo(stack.region, props.logGroup.logGroupName, '${INSTANCE_ID}-migrate'),
      ...containerCommon(stack.region, props.dbEndpoints),
      `--env APP_OWNER_SECRET_ID=${props.ownerSecret.secretArn}`,
      props.imageUri,
      'migrate',
    ].join(' ');
    userData.addCommands(
      ...hostPreamble(stack, logicalId, props.dbCaBundlePem),
      // Stop (not terminate) when done, whatever the outcome: see the file's head.
      "trap 'shutdown -h now' EXIT",
      `retry sh -c '${ecrLogin(stack)}'`,
      `retry docker pull ${props.imageUri}`,
      // Idempotent: a retry after a transient failure (the database still
      // starting, a dropped connection) finds the schema as far as it got.
      `retry ${migrate}`,
      'signal SUCCESS',
    );
    Validations.of(this.instance).acknowledge(
      {
        id: 'AwsSolutions-EC29',
        reason: 'A one-shot instance that stops itself after the migration; the next image replaces it. Not worth protecting.',
      },
    );
  }
}
