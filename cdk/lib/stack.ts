// The whole deployment: network, database and secrets, rotation, the web app
// host and the failure alerts. Each part is its own construct in its own file;
// this file wires them together and states the operator's opt-outs.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { CfnOutput, Stack, Token, Validations, type StackProps } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';
import { Database } from './database';
import { Network } from './network';
import { Operations } from './operations';
import { LAMBDA_CA_BUNDLE_PATH, rdsCaBundlePem, rdsCaLayerDirectory } from './rds-ca-bundle';
import { SecretRotation } from './rotation';
import { APP_PORT, DB_PORT, type Settings } from './settings';
import { WebAppHost } from './web-app-host';

export interface PgRotationStackProps extends StackProps {
  readonly settings: Settings;
}

export class PgRotationStack extends Stack {
  readonly network: Network;
  readonly database: Database;
  readonly appRotation: SecretRotation;
  readonly masterRotation?: SecretRotation;
  readonly webApp: WebAppHost;
  readonly operations: Operations;
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
      dbPort: DB_PORT,
      logRetentionDays: s.logRetentionDays,
      encryptionKey: this.key,
      s3PrefixListId: s.s3PrefixListId,
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
    this.network.restrictSecretsManagerEndpointTo([
      this.database.appSecret.secretArn,
      this.database.masterSecret.secretArn,
    ]);
    this.acknowledgeDatabaseChoices(s);

    const architecture = s.rotationFnArchitecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64;
    const caBundleLayer = new lambda.LayerVersion(this, 'RdsCaBundle', {
      description: `Amazon RDS root CAs for ${this.region}`,
      code: lambda.Code.fromAsset(rdsCaLayerDirectory(this.region)),
      compatibleRuntimes: [lambda.Runtime.PROVIDED_AL2023],
      compatibleArchitectures: [architecture],
    });
    const code = lambda.Code.fromAsset(s.rotationFnAssetDir);
    const rotation = (id: string, secret: Database['appSecret'], attachment: Database['appSecretAttachment'], alternating: boolean) =>
      new SecretRotation(this, id, {
        code,
        architecture,
        caBundleLayer,
        caBundlePath: LAMBDA_CA_BUNDLE_PATH,
        vpc: this.network.vpc,
        securityGroup: this.network.rotationSecurityGroup,
        secret,
        secretAttachment: attachment,
        strategy: alternating ? 'alternating-users' : 'single-user',
        masterSecret: alternating ? this.database.masterSecret : undefined,
        rotationDays: s.rotationDays,
        passwordLength: s.passwordLength,
        excludeCharacters: s.excludeCharacters,
        logRetentionDays: s.logRetentionDays,
        encryptionKey: this.key,
      });
    this.appRotation = rotation(
      'AppSecretRotation',
      this.database.appSecret,
      this.database.appSecretAttachment,
      s.rotationStrategy === 'alternating-users',
    );
    if (s.rotateMasterSecret) {
      this.masterRotation = rotation('MasterSecretRotation', this.database.masterSecret, this.database.masterSecretAttachment, false);
    } else {
      Validations.of(this.database.masterSecret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason:
          'The operator turned master rotation off explicitly (-c rotateMasterSecret=false); ' +
          'the application secret is still rotated on its schedule.',
      });
    }

    this.webApp = new WebAppHost(this, 'WebApp', {
      vpc: this.network.vpc,
      subnet: this.network.appSubnet,
      securityGroup: this.network.appSecurityGroup,
      appSecret: this.database.appSecret,
      appPort: APP_PORT,
      imageDirectory: s.webAppImageDir,
      architecture: s.webAppArchitecture,
      instanceType: s.appInstanceType,
      dbCaBundlePem: rdsCaBundlePem(this.region),
      scanImagesOnPush: s.scanImagesOnPush,
      encryptionKey: this.key,
    });

    this.operations = new Operations(this, 'Operations', { alertEmail: s.alertEmail, encryptionKey: this.key });

    const out = (id: string, value: string, description: string) => new CfnOutput(this, id, { value, description });
    out('AppSecretArn', this.database.appSecret.secretArn, 'Application user secret (rotate-secret --secret-id)');
    out('MasterSecretArn', this.database.masterSecret.secretArn, 'Master user secret');
    out('AppRotationFunctionName', this.appRotation.function.functionName, 'Rotation function of the app secret');
    out('AppRotationLogGroup', this.appRotation.logGroup.logGroupName, 'aws logs tail <this> --follow');
    if (this.masterRotation) {
      out('MasterRotationLogGroup', this.masterRotation.logGroup.logGroupName, 'aws logs tail <this> --follow');
    }
    out('DatabaseEndpoint', this.database.instance.dbInstanceEndpointAddress, 'PostgreSQL host');
    out('WebAppInstanceId', this.webApp.instance.instanceId, 'aws ssm start-session --target <this>');
    out('AlertTopicArn', this.operations.topic.topicArn, 'SNS topic for rotation failures');
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
    return key;
  }

  private acknowledgeDatabaseChoices(s: Settings): void {
    const db = this.database.instance;
    Validations.of(db).acknowledge(
      {
        id: 'AwsSolutions-RDS11',
        reason: 'The default port is kept on purpose: only two security groups can reach it, and a port number hides nothing.',
      },
      {
        id: 'AwsSolutions-RDS6',
        reason: 'Password authentication is the point of this system: the passwords are rotated by Secrets Manager.',
      },
    );
    if (!s.multiAz) {
      Validations.of(db).acknowledge({
        id: 'AwsSolutions-RDS3',
        reason: 'Single-AZ by default to keep the cost down; set -c multiAz=true for a standby in a second zone.',
      });
    }
    if (!s.deletionProtection) {
      Validations.of(db).acknowledge({
        id: 'AwsSolutions-RDS10',
        reason: 'The operator turned deletion protection off explicitly (-c deletionProtection=false).',
      });
    }
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
