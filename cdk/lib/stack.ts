// The whole deployment: network, database and secrets, the database logins,
// rotation, the web app image, its schema migration and fleet, alerts and the
// dashboard. Each part is its own construct in its own file; this file wires
// them together, orders what must wait for what, and states the operator's
// opt-outs.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { CfnOutput, Duration, IgnoreMode, Stack, Token, Validations, type StackProps } from 'aws-cdk-lib';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';
import { Database, DeletionProtectionGuard } from './database';
import { WebAppImage } from './image-registry';
import { SchemaMigration } from './migration';
import { Network } from './network';
import { Operations } from './operations';
import { RotationPreflight } from './preflight';
import { DatabaseProvisioner } from './provisioner';
import { LAMBDA_CA_BUNDLE_PATH, rdsCaBundlePem, rdsCaLayerDirectory } from './rds-ca-bundle';
import { ROTATION_TIMEOUT_SECONDS, SecretRotation } from './rotation';
import { rotationSchedule, type RotatedSecret } from './schedules';
import { ADMIN_PORT, APP_PORT, DB_PORT, LISTENER_PORT, type RotationStrategy, type Settings } from './settings';
import { WebAppFleet } from './web-app-fleet';

export interface PgRotationStackProps extends StackProps {
  readonly settings: Settings;
}

export class PgRotationStack extends Stack {
  readonly network: Network;
  readonly database: Database;
  readonly provisioner: DatabaseProvisioner;
  readonly appRotation: SecretRotation;
  readonly masterRotation?: SecretRotation;
  readonly ownerRotation: SecretRotation;
  readonly preflight: RotationPreflight;
  readonly image: WebAppImage;
  readonly migration: SchemaMigration;
  readonly webApp: WebAppFleet;
  readonly operations: Operations;
  readonly deletionProtection?: DeletionProtectionGuard;
  readonly key?: kms.Key;

  constructor(scope: Construct, id: string, props: PgRotationStackProps) {
    super(scope, id, props);
    const s = props.settings;
    if (Token.isUnresolved(this.region) || Token.isUnresolved(this.account)) {
      throw new Error(
        'PgRotationStack needs a concrete account and region (env): it looks up the S3 prefix list and ' +
          'picks the region\'s RDS CA certificates. `cdk deploy` supplies them from your AWS profile.',
      );
    }
    checkFunctionAsset(s.rotationFnAssetDir, s.rotationFnArchitecture);

    this.key = s.customerManagedKey ? this.customerManagedKey() : undefined;

    this.network = new Network(this, 'Network', {
      vpcCidr: s.vpcCidr,
      availabilityZones: s.availabilityZones,
      appIngressCidr: s.appIngressCidr,
      appPort: APP_PORT,
      listenerPort: LISTENER_PORT,
      dbPort: DB_PORT,
      logRetentionDays: s.logRetentionDays,
      encryptionKey: this.key,
      s3PrefixListId: s.s3PrefixListId,
      loadBalancer: s.loadBalancer,
      endpointZones: s.endpointZones,
      sessionManager: s.sessionManager,
    });

    this.database = new Database(this, 'Database', {
      vpc: this.network.vpc,
      securityGroup: this.network.databaseSecurityGroup,
      port: DB_PORT,
      postgresVersion: s.postgresVersion,
      instanceType: s.dbInstanceType,
      multiAz: s.multiAz,
      deletionProtection: s.deletionProtection,
      strategy: s.rotationStrategy,
      passwordLength: s.passwordLength,
      excludeCharacters: s.excludeCharacters,
      logRetentionDays: s.logRetentionDays,
      encryptionKey: this.key,
    });
    const db = this.database;
    // The one server every database client may log in at (DB_ENDPOINTS,
    // APP_DB_ENDPOINTS): a secret's host is checked against it, so a tampered
    // secret cannot send a password to another server.
    const dbEndpoints = `${db.instance.dbInstanceEndpointAddress}:${db.instance.dbInstanceEndpointPort}`;
    this.network.restrictSecretsManagerEndpointTo([db.appSecret.secretArn, db.masterSecret.secretArn, db.ownerSecret.secretArn]);
    this.acknowledgeDatabaseChoices(s);

    // One artifact, four roles: the rotation functions and the provisioner.
    const architecture = s.rotationFnArchitecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64;
    const caBundleLayer = new lambda.LayerVersion(this, 'RdsCaBundle', {
      description: `Amazon RDS root CAs for ${this.region}`,
      code: lambda.Code.fromAsset(rdsCaLayerDirectory(this.region)),
      compatibleRuntimes: [lambda.Runtime.PROVIDED_AL2023],
      compatibleArchitectures: [architecture],
    });
    const code = lambda.Code.fromAsset(s.rotationFnAssetDir);
    const artifact = {
      code,
      architecture,
      caBundleLayer,
      caBundlePath: LAMBDA_CA_BUNDLE_PATH,
      vpc: this.network.vpc,
      securityGroup: this.network.rotationSecurityGroup,
      logRetentionDays: s.logRetentionDays,
      encryptionKey: this.key,
      dbEndpoints,
    };

    // The logins first: the rotation schedules' deployment-time test and the
    // migration instance's `web-app migrate` need them. The provisioner reaches the
    // database and Secrets Manager through the network (endpoint, rules).
    this.provisioner = new DatabaseProvisioner(this, 'DatabaseLogins', {
      ...artifact,
      masterSecret: db.masterSecretAttachment,
      appSecret: db.appSecretAttachment,
      ownerSecret: db.ownerSecretAttachment,
    });
    this.provisioner.resource.node.addDependency(this.network, db.instance);

    const rotation = (
      rotationId: string,
      which: RotatedSecret,
      secret: Database['appSecret'],
      attachment: Database['appSecretAttachment'],
      strategy: RotationStrategy,
    ) => {
      const r = new SecretRotation(this, rotationId, {
        ...artifact,
        secret,
        secretAttachment: attachment,
        strategy,
        masterSecret: strategy === 'alternating-users' ? db.masterSecret : undefined,
        schedule: rotationSchedule(which, s.rotationDays),
        passwordLength: s.passwordLength,
        excludeCharacters: s.excludeCharacters,
      });
      r.schedule.node.addDependency(this.provisioner.resource);
      return r;
    };
    this.appRotation = rotation('AppSecretRotation', 'app', db.appSecret, db.appSecretAttachment, s.rotationStrategy);
    // The owner's login only runs `web-app migrate`; it rotates single-user
    // (the role must stay the owner of the schema), in a window of its own.
    this.ownerRotation = rotation('OwnerSecretRotation', 'owner', db.ownerSecret, db.ownerSecretAttachment, 'single-user');
    if (s.rotateMasterSecret) {
      this.masterRotation = rotation('MasterSecretRotation', 'master', db.masterSecret, db.masterSecretAttachment, 'single-user');
    } else {
      Validations.of(db.masterSecret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason:
          'The operator turned master rotation off explicitly (-c rotateMasterSecret=false); ' +
          'the application and owner secrets are still rotated on their schedule.',
      });
    }

    // The pre-flight of the app secret, once per deployment that creates or
    // changes its rotation function (lib/preflight.ts): after the logins exist
    // (the provisioner's resource) and after the function and its role, and
    // BEFORE the app secret's rotation schedule is attached. Attaching a
    // schedule makes Secrets Manager start something on the secret right away:
    // with RotateImmediatelyOnUpdate=false (ours) a test of the configuration
    // that creates an AWSPENDING version and removes it, with the default
    // (true) a whole rotation. A pre-flight racing either sees AWSPENDING on
    // another version and reports it as a failed check, which would fire the
    // AppRotationPreflightFailed alarm on every first deployment. Run before the
    // schedule, the first deployment's pre-flight reports "rotation not
    // enabled" as a warning only; later deployments find the schedule that the
    // previous one attached. (A deployment that changes the function during a
    // scheduled rotation's window can still meet a real rotation in progress;
    // that report is true: run it again afterwards, AppPreflightCommand.)
    this.preflight = new RotationPreflight(this, 'AppSecretPreflight', {
      rotation: this.appRotation,
      secret: db.appSecretAttachment,
      layers: [caBundleLayer],
      logRetentionDays: s.logRetentionDays,
      encryptionKey: this.key,
    });
    this.preflight.resource.node.addDependency(this.provisioner.resource);
    this.appRotation.schedule.node.addDependency(this.preflight.resource);

    // The image: published by `cdk deploy` to the bootstrap's repository,
    // copied into the stack's own during the deployment (lib/image-registry.ts).
    // The build context's .dockerignore lets in only what the image needs (the
    // workspace manifests, the lock file, web-app's and db-secret's sources); CDK
    // applies the same file when it hashes the context, so a change anywhere
    // else (tests, cdk, docs, the rotation function) changes neither the image
    // nor the launch templates.
    const asset = new ecrAssets.DockerImageAsset(this, 'WebAppImageAsset', {
      directory: s.webAppImageDir,
      file: 'Dockerfile',
      platform: s.webAppArchitecture === 'arm64' ? ecrAssets.Platform.LINUX_ARM64 : ecrAssets.Platform.LINUX_AMD64,
      ignoreMode: IgnoreMode.DOCKER,
    });
    this.image = new WebAppImage(this, 'WebAppImage', {
      asset,
      architecture: s.webAppArchitecture,
      logRetentionDays: s.logRetentionDays,
      encryptionKey: this.key,
    });
    const dbCaBundlePem = rdsCaBundlePem(this.region);
    this.webApp = new WebAppFleet(this, 'WebApp', {
      vpc: this.network.vpc,
      subnets: this.network.appSubnets,
      securityGroup: this.network.appSecurityGroup,
      loadBalancerSecurityGroup: this.network.loadBalancerSecurityGroup,
      appSecret: db.appSecret,
      dbEndpoints,
      appPort: APP_PORT,
      adminPort: ADMIN_PORT,
      listenerPort: LISTENER_PORT,
      imageUri: this.image.imageUri,
      imageRepositoryArn: this.image.repository.repositoryArn,
      architecture: s.webAppArchitecture,
      instanceType: s.appInstanceType,
      fleetSize: s.fleetSize,
      dbCaBundlePem,
      logRetentionDays: s.logRetentionDays,
      encryptionKey: this.key,
      sessionManager: s.sessionManager,
    });
    // The schema, once per image, by an instance of its own (the owner's
    // login never reaches a serving instance); the fleet changes only after it.
    this.migration = new SchemaMigration(this, 'SchemaMigration', {
      vpc: this.network.vpc,
      subnets: this.network.appSubnets,
      securityGroup: this.network.appSecurityGroup,
      ownerSecret: db.ownerSecret,
      dbEndpoints,
      imageUri: this.image.imageUri,
      imageRepositoryArn: this.image.repository.repositoryArn,
      architecture: s.webAppArchitecture,
      instanceType: s.appInstanceType,
      dbCaBundlePem,
      logGroup: this.webApp.logGroup,
      encryptionKey: this.key,
    });
    this.migration.instance.node.addDependency(this.image.copy, this.provisioner.resource, this.network);
    this.webApp.group.node.addDependency(this.migration.instance, this.image.copy, this.network);
    this.network.restrictHostEndpoints({
      instanceRoleArn: this.webApp.role.roleArn,
      migrationRoleArn: this.migration.role.roleArn,
      imageRepositoryArn: this.image.repository.repositoryArn,
      appLogGroupArn: this.webApp.logGroup.logGroupArn,
      stackId: this.stackId,
    });

    const rotations = [
      { name: 'AppRotation', rotation: this.appRotation },
      { name: 'OwnerRotation', rotation: this.ownerRotation },
      ...(this.masterRotation ? [{ name: 'MasterRotation', rotation: this.masterRotation }] : []),
    ];
    this.operations = new Operations(this, 'Operations', {
      alertEmail: s.alertEmail,
      encryptionKey: this.key,
      rotations: rotations.map(({ name, rotation: r }) => ({
        name,
        function: r.function,
        logGroup: r.logGroup,
        timeout: Duration.seconds(ROTATION_TIMEOUT_SECONDS),
      })),
      loadBalancer: this.webApp.loadBalancer,
      targetGroup: this.webApp.targetGroup,
      appLogGroup: this.webApp.logGroup,
      fleetSize: s.fleetSize,
      database: db.instance,
      maxConnections: approximateMaxConnections(s.dbInstanceType),
      group: this.webApp.group,
    });

    if (s.deletionProtection) {
      // Last: everything else exists and the fleet has signalled ready.
      this.deletionProtection = new DeletionProtectionGuard(this, 'DatabaseDeletionProtection', {
        database: db,
        after: [
          this.network,
          this.provisioner,
          this.appRotation,
          this.ownerRotation,
          ...(this.masterRotation ? [this.masterRotation] : []),
          this.preflight,
          this.image,
          this.migration,
          this.webApp,
          this.operations,
        ],
        logRetentionDays: s.logRetentionDays,
        encryptionKey: this.key,
      });
    }

    const out = (outputId: string, value: string, description: string) => new CfnOutput(this, outputId, { value, description });
    out('AppSecretArn', db.appSecret.secretArn, 'Application user secret (rotate-secret --secret-id)');
    out('MasterSecretArn', db.masterSecret.secretArn, 'Master user secret');
    out('OwnerSecretArn', db.ownerSecret.secretArn, 'Schema owner secret (web-app migrate)');
    out('AppRotationFunctionName', this.appRotation.function.functionName, 'Rotation function of the app secret');
    out(
      'AppPreflightCommand',
      `aws lambda invoke --function-name ${this.appRotation.function.functionName} --cli-binary-format raw-in-base64-out ` +
        `--payload '{"Operation": "preflight", "SecretId": "${db.appSecret.secretArn}"}' preflight.json`,
      'would a rotation of the app secret succeed now? (writes nothing; README "Pre-flight")',
    );
    out('AppPreflightReady', this.preflight.ready, 'the last pre-flight a deployment ran (when the function was created or changed): "true" when no check failed');
    out('AppPreflightSummary', this.preflight.summary, 'the last pre-flight a deployment ran: "ready", or the failed checks with their fixes (README "Pre-flight")');
    out('AppRotationLogGroup', this.appRotation.logGroup.logGroupName, 'aws logs tail <this> --follow');
    out('OwnerRotationLogGroup', this.ownerRotation.logGroup.logGroupName, 'aws logs tail <this> --follow');
    if (this.masterRotation) {
      out('MasterRotationLogGroup', this.masterRotation.logGroup.logGroupName, 'aws logs tail <this> --follow');
    }
    out('DatabaseLoginsLogGroup', this.provisioner.logGroup.logGroupName, 'the provisioner\'s log (deployment time)');
    out('DatabaseEndpoint', db.instance.dbInstanceEndpointAddress, 'PostgreSQL host');
    if (this.webApp.loadBalancer) {
      out('LoadBalancerDnsName', this.webApp.loadBalancer.loadBalancerDnsName, `http://<this>:${LISTENER_PORT}/ from appIngressCidr`);
    }
    out('ImageRepositoryUri', this.image.repository.repositoryUri, "the stack's own repository (only the copy function pushes)");
    out('AutoScalingGroupName', this.webApp.group.autoScalingGroupName, 'the fleet (instance ids: aws autoscaling describe-auto-scaling-groups)');
    out('AppLogGroup', this.webApp.logGroup.logGroupName, 'the web app, one stream per instance: aws logs tail <this> --follow');
    out('DashboardName', this.operations.dashboard.dashboardName, 'CloudWatch dashboard: rotations, fleet, credential version per instance');
    out('AlertTopicArn', this.operations.topic.topicArn, 'SNS topic for rotation failures and alarms');
  }

  private customerManagedKey(): kms.Key {
    const key = new kms.Key(this, 'Key', {
      description: 'Secrets, database storage, volumes, logs and alerts of the PostgreSQL rotation stack',
      enableKeyRotation: true,
    });
    // CloudWatch Logs encrypts with the key itself, so it must be named in the
    // key policy; the condition keeps it to this account's log groups.
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchLogsOfThisAccount',
        principals: [new iam.ServicePrincipal(`logs.${this.region}.amazonaws.com`)],
        actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
        resources: ['*'],
        conditions: {
          ArnLike: { 'kms:EncryptionContext:aws:logs:arn': `arn:${this.partition}:logs:${this.region}:${this.account}:log-group:*` },
        },
      }),
    );
    // Encrypted root volumes: EC2 Auto Scaling launches the instances and EC2
    // uses the key on its behalf (through the service-linked role, which may
    // not exist yet in a new account and so is not named). The statements of
    // the AWS-managed aws/ebs key: this account's principals, through EC2
    // only; grants only for AWS resources (EC2 keeps one per attached volume).
    const viaEc2 = { 'kms:CallerAccount': this.account, 'kms:ViaService': `ec2.${this.region}.amazonaws.com` };
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'EbsVolumesThroughEc2',
        principals: [new iam.AnyPrincipal()],
        actions: ['kms:Encrypt', 'kms:Decrypt', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:DescribeKey'],
        resources: ['*'],
        conditions: { StringEquals: viaEc2 },
      }),
    );
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'EbsVolumeGrantsThroughEc2',
        principals: [new iam.AnyPrincipal()],
        actions: ['kms:CreateGrant'],
        resources: ['*'],
        conditions: { StringEquals: viaEc2, Bool: { 'kms:GrantIsForAWSResource': 'true' } },
      }),
    );
    return key;
  }

  private acknowledgeDatabaseChoices(s: Settings): void {
    const db = this.database.instance;
    Validations.of(db).acknowledge(
      {
        id: 'AwsSolutions-RDS11',
        reason: 'The default port is kept on purpose: only two security groups can reach it, and a port number hides nothing.',
      },
    );
    if (!s.multiAz) {
      Validations.of(db).acknowledge({
        id: 'AwsSolutions-RDS3',
        reason: 'Single-AZ by default to keep the cost down; set -c multiAz=true for a standby in a second zone.',
      });
    }
    Validations.of(db).acknowledge({
      id: 'AwsSolutions-RDS10',
      reason: s.deletionProtection
        ? 'The instance is created unprotected so that a failed first deployment can roll back; ' +
          'DatabaseDeletionProtection turns protection on as the stack\'s last step (lib/database.ts).'
        : 'The operator turned deletion protection off explicitly (-c deletionProtection=false).',
    });
  }
}

/** Fails synthesis early, with the fix, when the function binary is missing or built for the wrong CPU. */
export function checkFunctionAsset(dir: string, architecture: Settings['rotationFnArchitecture']): void {
  const bootstrap = path.join(dir, 'bootstrap');
  if (!fs.existsSync(bootstrap)) {
    throw new Error(
      `No rotation function at ${bootstrap}. Build it first: ` +
        `cargo lambda build --release -p rotation-fn ${architecture === 'arm64' ? '--arm64' : '--x86-64'} ` +
        '(or pass -c rotationFnAssetDir=DIR holding a `bootstrap`).',
    );
  }
  const head = Buffer.alloc(20);
  const fd = fs.openSync(bootstrap, 'r');
  try {
    fs.readSync(fd, head, 0, 20, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (head.subarray(0, 4).toString('latin1') !== '\x7fELF') return; // a script bootstrap is fine
  const machine = head.readUInt16LE(18);
  const found = machine === 0xb7 ? 'arm64' : machine === 0x3e ? 'x86_64' : `machine ${machine}`;
  if (found !== architecture) {
    throw new Error(
      `${bootstrap} is built for ${found} but the function is configured for ${architecture}; ` +
        `rebuild with ${architecture === 'arm64' ? '--arm64' : '--x86-64'} or pass -c rotationFnArchitecture=${found}.`,
    );
  }
}

/**
 * RDS PostgreSQL's default max_connections, LEAST(DBInstanceClassMemory/9531392, 5000),
 * from the class's nominal memory (RDS reserves some, so the real limit is a
 * little lower; the alarm fires at 80 % of this).
 */
export function approximateMaxConnections(instanceType: string): number {
  const size = instanceType.split('.').pop() ?? '';
  const gib: Record<string, number> = { micro: 1, small: 2, medium: 4, large: 8, xlarge: 16, '2xlarge': 32, '4xlarge': 64 };
  return Math.min(Math.floor(((gib[size] ?? 1) * 1024 ** 3) / 9531392), 5000);
}
