// One rotation function per rotated secret, each with a role that can touch
// that secret only.
//
// CDK's `secret.addRotationSchedule()` is deliberately not used: for a Lambda
// it grants `secretsmanager:GetRandomPassword` on `*` (our function makes its
// own passwords) and lets Secrets Manager invoke the function without
// `aws:SourceAccount`. The schedule, the invoke permission and the role are
// written out here instead, so each one says exactly what it allows.

import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Validations } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import { SUBNETS } from './network';
import type { RotationSchedule } from './schedules';
import type { RotationStrategy } from './settings';

export interface SecretRotationProps extends BootstrapFunctionProps {
  /** The secret this function rotates. */
  readonly secret: secretsmanager.ISecret;
  /** The same secret as attached to the database: the schedule waits for it. */
  readonly secretAttachment: secretsmanager.ISecret;
  readonly strategy: RotationStrategy;
  /** Alternating users only: the master secret, read to log in as the master user. */
  readonly masterSecret?: secretsmanager.ISecret;
  /** When Secrets Manager rotates: a cron expression and a window (lib/schedules.ts). */
  readonly schedule: RotationSchedule;
  readonly passwordLength: number;
  readonly excludeCharacters: string;
  readonly logRetentionDays: number;
}

/** Seconds: the function derives its own database and API deadlines from this. */
export const ROTATION_TIMEOUT_SECONDS = 30;

/**
 * Memory of every function that runs the `bootstrap` binary (the rotation
 * functions and the database provisioner). Lambda allocates CPU in proportion
 * to memory, and a rotation is CPU-bound between its I/O waits (TLS handshakes,
 * the SCRAM verifier's 4096 PBKDF2 rounds): the value comes from the rotation
 * benchmark's CPU-quota table in the repository README (rotation time against
 * the CPU share of each memory size). 256 until the lead engineer sets it from
 * that table; change it here only.
 */
export const ROTATION_MEMORY_MB = 256;

/**
 * Log groups of the stack's functions: a generated name (nothing can collide
 * with a redeploy), retention, the stack's key when there is one, and
 * `RetainExceptOnCreate`: kept when the stack is updated or deleted (the
 * record of what happened), removed when a failed first deployment rolls back.
 */
export function functionLogGroup(scope: Construct, id: string, retentionDays: number, encryptionKey?: kms.IKey): logs.LogGroup {
  return new logs.LogGroup(scope, id, {
    retention: retentionDays as logs.RetentionDays,
    encryptionKey,
    removalPolicy: RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
  });
}

/**
 * What a function in the VPC needs besides its own work: Lambda creates its
 * network interfaces with the execution role (the actions of AWS's
 * AWSLambdaVPCAccessExecutionRole; no interface id exists beforehand, so "*"),
 * and it writes to its own log group only.
 */
export function vpcFunctionStatements(logGroup: logs.ILogGroup): iam.PolicyStatement[] {
  return [
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
      resources: [logGroup.logGroupArn],
    }),
  ];
}

/** KMS through Secrets Manager only, for secrets encrypted with the stack's key. */
export function secretsKeyStatement(
  key: kms.IKey,
  region: string,
  actions: string[],
  sid = 'UseTheKeyThroughSecretsManager',
): iam.PolicyStatement {
  return new iam.PolicyStatement({
    sid,
    actions,
    resources: [key.keyArn],
    conditions: { StringEquals: { 'kms:ViaService': `secretsmanager.${region}.amazonaws.com` } },
  });
}

/** What every function running the `bootstrap` artifact shares. */
export interface BootstrapFunctionProps {
  readonly code: lambda.Code;
  readonly architecture: lambda.Architecture;
  readonly caBundleLayer: lambda.ILayerVersion;
  readonly caBundlePath: string;
  readonly vpc: ec2.IVpc;
  readonly securityGroup: ec2.ISecurityGroup;
  readonly encryptionKey?: kms.IKey;
  /**
   * `DB_ENDPOINTS`: the comma-separated `host:port` list the binary may log in
   * at (the database instance's endpoint). A secret naming another host is
   * refused, so a tampered secret cannot send the master's password elsewhere.
   */
  readonly dbEndpoints: string;
}

/**
 * A function running the `bootstrap` artifact: provided.al2023, the measured
 * memory size, in the rotation subnets and security group, the RDS roots in a
 * layer, verified TLS. `handler` selects what the binary does (`bootstrap`
 * rotates, `provision` provisions); `environment` adds to the shared variables.
 */
export function bootstrapFunction(
  scope: Construct,
  id: string,
  props: BootstrapFunctionProps & {
    readonly description: string;
    readonly handler: string;
    readonly timeout: Duration;
    readonly role: iam.IRole;
    readonly logGroup: logs.ILogGroup;
    readonly environment: Record<string, string>;
  },
): lambda.Function {
  return new lambda.Function(scope, id, {
    description: props.description,
    runtime: lambda.Runtime.PROVIDED_AL2023,
    handler: props.handler,
    code: props.code,
    architecture: props.architecture,
    memorySize: ROTATION_MEMORY_MB,
    timeout: props.timeout,
    role: props.role,
    logGroup: props.logGroup,
    vpc: props.vpc,
    vpcSubnets: { subnetGroupName: SUBNETS.rotation },
    securityGroups: [props.securityGroup],
    layers: [props.caBundleLayer],
    // The variables hold no secret (strategy, length, a path); with a
    // customer-managed key they are encrypted with it like everything else.
    environmentEncryption: props.encryptionKey,
    environment: {
      ...props.environment,
      DB_CA_BUNDLE: props.caBundlePath,
      DB_TLS: 'verify-full',
      DB_ENDPOINTS: props.dbEndpoints,
      RUST_LOG: 'info',
    },
  });
}

export const VPC_ATTACH_ACKNOWLEDGEMENT =
  'Only the Lambda VPC network-interface actions (ec2:DescribeNetworkInterfaces/DescribeSubnets, Create/DeleteNetworkInterface, ' +
  '(Un)AssignPrivateIpAddresses) use "*": Lambda creates the interfaces before their ids exist. ' +
  'Every secretsmanager, logs and kms statement names its resource.';

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

    this.logGroup = functionLogGroup(this, 'Logs', props.logRetentionDays, props.encryptionKey);

    const [attachToTheVpc, writeItsOwnLogs] = vpcFunctionStatements(this.logGroup);
    const statements = [
      new iam.PolicyStatement({
        sid: 'RotateTheSecret',
        actions: [
          'secretsmanager:DescribeSecret',
          'secretsmanager:GetSecretValue',
          'secretsmanager:PutSecretValue',
          'secretsmanager:UpdateSecretVersionStage',
          // setSecret's recovery from an abandoned rotation: when neither
          // AWSCURRENT nor AWSPREVIOUS logs in, it tries the newest unlabelled
          // versions of the same user and host (contracts.md).
          'secretsmanager:ListSecretVersionIds',
        ],
        resources: [props.secret.secretArn],
      }),
      attachToTheVpc,
      writeItsOwnLogs,
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
      statements.push(secretsKeyStatement(props.encryptionKey, stack.region, ['kms:Decrypt', 'kms:GenerateDataKey']));
    }
    // Inline in the role, so the permissions exist before the function is
    // created and outlive it on deletion (Lambda needs them to remove its ENIs).
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `Rotates one secret (${props.strategy})`,
      inlinePolicies: { Rotation: new iam.PolicyDocument({ statements }) },
    });
    Validations.of(this.role).acknowledge({ id: 'AwsSolutions-IAM5[Resource::*]', reason: VPC_ATTACH_ACKNOWLEDGEMENT });

    // No reserved concurrency: Secrets Manager never runs two steps of one
    // secret at once, and a new account's pool of 10 refuses any reservation
    // that leaves it fewer than 10 unreserved (the first deploy failed on it).
    this.function = bootstrapFunction(this, 'Function', {
      ...props,
      description: `Secrets Manager rotation for PostgreSQL (${props.strategy})`,
      handler: 'bootstrap',
      timeout: Duration.seconds(ROTATION_TIMEOUT_SECONDS),
      role: this.role,
      logGroup: this.logGroup,
      environment: {
        ROTATION_STRATEGY: props.strategy,
        PASSWORD_LENGTH: String(props.passwordLength),
        EXCLUDE_CHARACTERS: props.excludeCharacters,
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
      // A cron expression and a window, staggered per secret (lib/schedules.ts).
      rotationRules: { scheduleExpression: props.schedule.scheduleExpression, duration: props.schedule.duration },
      // Without an immediate rotation, Secrets Manager tests the configuration
      // by running testSecret at deployment; the stack makes the schedule wait
      // for the database logins (lib/provisioner.ts) so that test finds them.
      // The first real rotation is the operator's (cdk/README.md).
      rotateImmediatelyOnUpdate: false,
    });
    this.schedule.node.addDependency(permission);
  }
}
