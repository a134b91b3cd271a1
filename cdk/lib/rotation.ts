// One rotation function per rotated secret, each with a role that can touch
// that secret only.
//
// CDK's `secret.addRotationSchedule()` is deliberately not used: for a Lambda
// it grants `secretsmanager:GetRandomPassword` on `*` (our function makes its
// own passwords) and lets Secrets Manager invoke the function without
// `aws:SourceAccount`. The schedule, the invoke permission and the role are
// written out here instead, so each one says exactly what it allows.

import { Duration, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Validations } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import { SUBNETS } from './network';
import type { RotationStrategy } from './settings';

export interface SecretRotationProps {
  readonly code: lambda.Code;
  readonly architecture: lambda.Architecture;
  readonly caBundleLayer: lambda.ILayerVersion;
  readonly caBundlePath: string;
  readonly vpc: ec2.IVpc;
  readonly securityGroup: ec2.ISecurityGroup;
  /** The secret this function rotates. */
  readonly secret: secretsmanager.ISecret;
  /** The same secret as attached to the database: the schedule waits for it. */
  readonly secretAttachment: secretsmanager.ISecret;
  readonly strategy: RotationStrategy;
  /** Alternating users only: the master secret, read to log in as the master user. */
  readonly masterSecret?: secretsmanager.ISecret;
  readonly rotationDays: number;
  readonly passwordLength: number;
  readonly excludeCharacters: string;
  readonly logRetentionDays: number;
  readonly encryptionKey?: kms.IKey;
}

/** Seconds: the function derives its own database and API deadlines from this. */
export const ROTATION_TIMEOUT_SECONDS = 30;

export class SecretRotation extends Construct {
  readonly function: lambda.Function;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;
  readonly schedule: secretsmanager.CfnRotationSchedule;

  constructor(scope: Construct, id: string, props: SecretRotationProps) {
    super(scope, id);
    if ((props.strategy === 'alternating-users') !== (props.masterSecret !== undefined)) {
      throw new Error('the master secret is needed by, and only by, the alternating-users strategy');
    }
    const stack = Stack.of(this);

    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetentionDays as logs.RetentionDays,
      encryptionKey: props.encryptionKey,
    });

    const statements = [
      new iam.PolicyStatement({
        sid: 'RotateTheSecret',
        actions: [
          'secretsmanager:DescribeSecret',
          'secretsmanager:GetSecretValue',
          'secretsmanager:PutSecretValue',
          'secretsmanager:UpdateSecretVersionStage',
        ],
        resources: [props.secret.secretArn],
      }),
      // Lambda attaches the function to the VPC through network interfaces it
      // creates with this role. These EC2 actions are the ones in AWS's
      // AWSLambdaVPCAccessExecutionRole; Describe* cannot be scoped to a resource.
      new iam.PolicyStatement({
        sid: 'AttachToTheVpc',
        actions: [
          'ec2:CreateNetworkInterface',
          'ec2:DescribeNetworkInterfaces',
          'ec2:DescribeSubnets',
          'ec2:DeleteNetworkInterface',
          'ec2:AssignPrivateIpAddresses',
          'ec2:UnassignPrivateIpAddresses',
        ],
        resources: ['*'],
      }),
      new iam.PolicyStatement({
        sid: 'WriteItsOwnLogs',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [this.logGroup.logGroupArn],
      }),
    ];
    if (props.masterSecret) {
      statements.push(
        new iam.PolicyStatement({
          sid: 'ReadTheMasterSecret',
          actions: ['secretsmanager:GetSecretValue'],
          resources: [props.masterSecret.secretArn],
        }),
      );
    }
    if (props.encryptionKey) {
      statements.push(
        new iam.PolicyStatement({
          sid: 'UseTheKeyThroughSecretsManager',
          actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
          resources: [props.encryptionKey.keyArn],
          conditions: { StringEquals: { 'kms:ViaService': `secretsmanager.${stack.region}.amazonaws.com` } },
        }),
      );
    }
    // Inline in the role, so the permissions exist before the function is
    // created and outlive it on deletion (Lambda needs them to remove its ENIs).
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `Rotates one secret (${props.strategy})`,
      inlinePolicies: { Rotation: new iam.PolicyDocument({ statements }) },
    });
    Validations.of(this.role).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'Only the Lambda VPC network-interface actions (ec2:DescribeNetworkInterfaces/DescribeSubnets, Create/DeleteNetworkInterface, ' +
        '(Un)AssignPrivateIpAddresses) use "*": Lambda creates the interfaces before their ids exist. ' +
        'Every secretsmanager, logs and kms statement names its resource.',
    });

    this.function = new lambda.Function(this, 'Function', {
      description: `Secrets Manager rotation for PostgreSQL (${props.strategy})`,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      handler: 'bootstrap',
      code: props.code,
      architecture: props.architecture,
      memorySize: 128,
      timeout: Duration.seconds(ROTATION_TIMEOUT_SECONDS),
      // One rotation at a time: Secrets Manager never needs more, and a second
      // concurrent run could only race the first.
      reservedConcurrentExecutions: 1,
      role: this.role,
      logGroup: this.logGroup,
      vpc: props.vpc,
      vpcSubnets: { subnetGroupName: SUBNETS.rotation },
      securityGroups: [props.securityGroup],
      layers: [props.caBundleLayer],
      // The variables hold no secret (strategy, length, a path); with a
      // customer-managed key they are encrypted with it like everything else.
      environmentEncryption: props.encryptionKey,
      environment: {
        ROTATION_STRATEGY: props.strategy,
        PASSWORD_LENGTH: String(props.passwordLength),
        EXCLUDE_CHARACTERS: props.excludeCharacters,
        DB_CA_BUNDLE: props.caBundlePath,
        DB_TLS: 'verify-full',
        RUST_LOG: 'info',
      },
    });

    const permission = new lambda.CfnPermission(this, 'InvokedBySecretsManager', {
      functionName: this.function.functionArn,
      action: 'lambda:InvokeFunction',
      principal: 'secretsmanager.amazonaws.com',
      sourceAccount: stack.account,
      sourceArn: props.secret.secretArn,
    });

    this.schedule = new secretsmanager.CfnRotationSchedule(this, 'Schedule', {
      secretId: props.secretAttachment.secretArn,
      rotationLambdaArn: this.function.functionArn,
      rotationRules: { automaticallyAfterDays: props.rotationDays },
      // The first rotation is started by the operator once the database user
      // exists (see cdk/README.md); rotating at creation would fail for `app`.
      rotateImmediatelyOnUpdate: false,
    });
    this.schedule.node.addDependency(permission);
  }
}
