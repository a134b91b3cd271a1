// The rotation function and its schedule, the web app host, the database and
// its secrets, and the failure alerts.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Match } from 'aws-cdk-lib/assertions';
import { DEFAULTS, SINGLE_USER_CMK } from './configurations';
import { resourcesOfType, synth, type Synthesised } from './helpers';

function userData(s: Synthesised): string {
  const instance = s.json.Resources[s.logicalId(s.stack.webApp.instance)].Properties!;
  // Fn::Base64 of a Fn::Join: keep the literal parts, mark the tokens.
  const join = instance.UserData['Fn::Base64'];
  if (typeof join === 'string') return join;
  return (join['Fn::Join'][1] as unknown[]).map((part) => (typeof part === 'string' ? part : `<${JSON.stringify(part)}>`)).join('');
}

describe('rotation function', () => {
  for (const [name, context, strategy] of [
    ['DEFAULTS', DEFAULTS, 'alternating-users'],
    ['SINGLE_USER_CMK', SINGLE_USER_CMK, 'single-user'],
  ] as const) {
    it(`${name}: provided.al2023 arm64 bootstrap in the VPC, concurrency 1, 30 s, strategy ${strategy}`, () => {
      const s = synth(context);
      const fn = s.json.Resources[s.logicalId(s.stack.appRotation.function)].Properties!;
      assert.equal(fn.Runtime, 'provided.al2023');
      assert.equal(fn.Handler, 'bootstrap');
      assert.deepEqual(fn.Architectures, ['arm64']);
      assert.equal(fn.ReservedConcurrentExecutions, 1);
      assert.equal(fn.Timeout, 30);
      assert.deepEqual(fn.Environment.Variables, {
        ROTATION_STRATEGY: strategy,
        PASSWORD_LENGTH: '32',
        EXCLUDE_CHARACTERS: '/@"\'\\',
        DB_CA_BUNDLE: '/opt/rds-ca/bundle.pem',
        DB_TLS: 'verify-full',
        RUST_LOG: 'info',
      });
      assert.deepEqual(fn.VpcConfig, {
        SecurityGroupIds: [{ 'Fn::GetAtt': [s.logicalId(s.stack.network.rotationSecurityGroup), 'GroupId'] }],
        SubnetIds: s.stack.network.vpc.selectSubnets({ subnetGroupName: 'rotation' }).subnetIds.map(s.ref),
      });
      assert.deepEqual(fn.LoggingConfig, { LogGroup: { Ref: s.logicalId(s.stack.appRotation.logGroup) } });
      assert.equal(s.json.Resources[s.logicalId(s.stack.appRotation.logGroup)].Properties!.RetentionInDays, 365);
      // The layer with the RDS CA bundle that DB_CA_BUNDLE points into.
      assert.equal(fn.Layers.length, 1);
      s.template.hasResourceProperties('AWS::Lambda::LayerVersion', {
        CompatibleRuntimes: ['provided.al2023'],
        CompatibleArchitectures: ['arm64'],
      });
    });
  }

  it('the architecture follows the context (for an x86-64 build)', () => {
    const s = synth({ rotationFnArchitecture: 'x86_64' });
    const fn = s.json.Resources[s.logicalId(s.stack.appRotation.function)].Properties!;
    assert.deepEqual(fn.Architectures, ['x86_64']);
  });
});

describe('rotation schedule', () => {
  it('rotates the app and master secrets every 30 days by default, through their functions', () => {
    const s = synth(DEFAULTS);
    const schedules = resourcesOfType(s.json, 'AWS::SecretsManager::RotationSchedule');
    assert.equal(schedules.length, 2);
    for (const rotation of [s.stack.appRotation, s.stack.masterRotation!]) {
      const schedule = s.json.Resources[s.logicalId(rotation.schedule)];
      assert.deepEqual(schedule.Properties, {
        SecretId: s.ref(rotation === s.stack.appRotation ? s.stack.database.appSecretAttachment.secretArn : s.stack.database.masterSecretAttachment.secretArn),
        RotationLambdaARN: s.ref(rotation.function.functionArn),
        RotationRules: { AutomaticallyAfterDays: 30 },
        RotateImmediatelyOnUpdate: false,
      });
      // Secrets Manager checks the invoke permission when the schedule is created.
      const permission = resourcesOfType(s.json, 'AWS::Lambda::Permission').find(
        ([, p]) => JSON.stringify(p.FunctionName) === JSON.stringify(s.ref(rotation.function.functionArn)),
      )!;
      assert.ok(schedule.DependsOn?.includes(permission[0]), 'the schedule waits for the invoke permission');
    }
  });

  it('the interval is configurable, and the master secret can be left out', () => {
    const s = synth(SINGLE_USER_CMK);
    const schedules = resourcesOfType(s.json, 'AWS::SecretsManager::RotationSchedule');
    assert.equal(schedules.length, 1);
    assert.deepEqual(schedules[0][1].RotationRules, { AutomaticallyAfterDays: 7 });
    assert.deepEqual(schedules[0][1].SecretId, s.ref(s.stack.database.appSecretAttachment.secretArn));
  });
});

describe('web app instance', () => {
  it('requires IMDSv2 with a hop limit of 2, has an encrypted root volume, no key pair, no public IP', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK]) {
      const s = synth(context);
      const instance = s.json.Resources[s.logicalId(s.stack.webApp.instance)].Properties!;
      assert.deepEqual(instance.MetadataOptions, { HttpEndpoint: 'enabled', HttpTokens: 'required', HttpPutResponseHopLimit: 2 });
      assert.equal(instance.KeyName, undefined);
      assert.equal(instance.NetworkInterfaces[0].AssociatePublicIpAddress, false);
      assert.deepEqual(instance.NetworkInterfaces[0].GroupSet, [{ 'Fn::GetAtt': [s.logicalId(s.stack.network.appSecurityGroup), 'GroupId'] }]);
      const ebs = instance.BlockDeviceMappings[0].Ebs;
      assert.equal(ebs.Encrypted, true);
      if (s.stack.key) assert.deepEqual(ebs.KmsKeyId, s.ref(s.stack.key.keyArn));
      assert.match(JSON.stringify(instance.ImageId), /amazonlinuxlatestal2023/);
    }
  });

  it('user data installs Docker and runs the image read-only, without capabilities, with only the secret ARN and region', () => {
    const s = synth(DEFAULTS);
    const script = userData(s);
    assert.match(script, /dnf install -y docker/);
    const run = script.split('\n').find((l) => l.startsWith('ExecStart=/usr/bin/docker run'));
    assert.ok(run, 'a docker run line');
    for (const flag of ['--read-only', '--cap-drop ALL', '--security-opt no-new-privileges']) {
      assert.ok(run.includes(` ${flag} `), `docker run lacks ${flag}`);
    }
    const envs = [...run.matchAll(/--env (\w+)=(\S+)/g)].map((m) => [m[1], m[2]]);
    assert.deepEqual(
      envs.map(([k]) => k),
      ['APP_SECRET_ID', 'AWS_REGION', 'APP_LISTEN_ADDR', 'APP_DB_CA_BUNDLE'],
    );
    assert.equal(envs[0][1], `<${JSON.stringify(s.ref(s.stack.database.appSecret.secretArn))}>`);
    assert.equal(envs[1][1], 'eu-west-1');
    for (const forbidden of ['--privileged', '--network host', '--net=host', 'docker.sock', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', '"password"']) {
      assert.ok(!script.includes(forbidden), `user data contains ${forbidden}`);
    }
    // The RDS CA bundle is written by user data and mounted read-only.
    assert.match(run, /--volume \/etc\/pki\/rds\/bundle.pem:\/etc\/rds-ca\/bundle.pem:ro/);
    assert.match(script, /-----BEGIN CERTIFICATE-----/);
  });

  it('the image is pulled from its asset repository, which is scanned on push', () => {
    const s = synth(DEFAULTS);
    const script = userData(s);
    assert.match(
      script,
      /docker pull <\{"Fn::Sub":"123456789012\.dkr\.ecr\.eu-west-1\.\$\{AWS::URLSuffix\}\/cdk-hnb659fds-container-assets-123456789012-eu-west-1:[0-9a-f]{64}"\}>/,
    );
    s.template.resourceCountIs('AWS::ECR::RegistryScanningConfiguration', 1);
    s.template.hasResourceProperties('AWS::ECR::RegistryScanningConfiguration', {
      ScanType: 'BASIC',
      Rules: [
        {
          ScanFrequency: 'SCAN_ON_PUSH',
          RepositoryFilters: [{ Filter: 'cdk-hnb659fds-container-assets-123456789012-eu-west-1', FilterType: 'WILDCARD' }],
        },
      ],
    });
    synth(SINGLE_USER_CMK).template.resourceCountIs('AWS::ECR::RegistryScanningConfiguration', 0);
  });
});

describe('database', () => {
  it('is PostgreSQL at a pinned full version, encrypted, private, TLS forced, deletion protected by default', () => {
    const s = synth(DEFAULTS);
    s.template.hasResourceProperties('AWS::RDS::DBInstance', {
      Engine: 'postgres',
      EngineVersion: Match.stringLikeRegexp('^\\d+\\.\\d+$'),
      StorageEncrypted: true,
      PubliclyAccessible: false,
      DeletionProtection: true,
      DBParameterGroupName: { Ref: Match.anyValue() },
    });
    s.template.hasResourceProperties('AWS::RDS::DBParameterGroup', {
      Family: 'postgres17',
      Parameters: Match.objectLike({ 'rds.force_ssl': '1', password_encryption: 'scram-sha-256', log_statement: 'none' }),
    });
  });

  it('deletion protection and the engine version are configurable; the key is the customer-managed one', () => {
    const s = synth(SINGLE_USER_CMK);
    s.template.hasResourceProperties('AWS::RDS::DBInstance', {
      DeletionProtection: false,
      StorageEncrypted: true,
      KmsKeyId: s.ref(s.stack.key!.keyArn),
    });
    const other = synth({ postgresVersion: '16.9', deletionProtection: 'false' });
    other.template.hasResourceProperties('AWS::RDS::DBInstance', { EngineVersion: '16.9' });
    other.template.hasResourceProperties('AWS::RDS::DBParameterGroup', { Family: 'postgres16' });
  });

  it('secrets: generated passwords, masterarn on the app secret for alternating users only', () => {
    const s = synth(DEFAULTS);
    const app = s.json.Resources[s.logicalId(s.stack.database.appSecret)].Properties!;
    assert.deepEqual(app.GenerateSecretString.SecretStringTemplate, {
      'Fn::Join': ['', ['{"username":"app","dbname":"app","masterarn":"', s.ref(s.stack.database.masterSecret.secretArn), '"}']],
    });
    assert.equal(app.GenerateSecretString.GenerateStringKey, 'password');
    assert.equal(app.SecretString, undefined);
    // engine, host and port come from attaching each secret to the instance.
    assert.equal(resourcesOfType(s.json, 'AWS::SecretsManager::SecretTargetAttachment').length, 2);

    const single = synth(SINGLE_USER_CMK);
    const appSingle = single.json.Resources[single.logicalId(single.stack.database.appSecret)].Properties!;
    assert.equal(appSingle.GenerateSecretString.SecretStringTemplate, '{"username":"app","dbname":"app"}');
    assert.deepEqual(appSingle.KmsKeyId, single.ref(single.stack.key!.keyArn));
  });
});

describe('rotation failure alerts', () => {
  it('an EventBridge rule sends RotationFailed and RotationAbandoned to the topic, e-mailed to the configured address', () => {
    const s = synth(SINGLE_USER_CMK);
    const topic = s.logicalId(s.stack.operations.topic);
    s.template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.secretsmanager'],
        'detail-type': ['AWS Service Event via CloudTrail'],
        detail: { eventSource: ['secretsmanager.amazonaws.com'], eventName: ['RotationFailed', 'RotationAbandoned'] },
      },
      State: 'ENABLED',
      Targets: [{ Arn: { Ref: topic }, Id: 'RotationAlertsTopic' }],
    });
    s.template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ops@example.com', TopicArn: { Ref: topic } });
    s.template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Sid: 'PublishFromTheRotationFailureRule',
            Principal: { Service: 'events.amazonaws.com' },
            Action: 'sns:Publish',
            Condition: { ArnEquals: { 'aws:SourceArn': s.ref(s.stack.operations.rule.ruleArn) } },
          }),
        ]),
      },
    });
    s.template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: s.ref(s.stack.key!.keyArn) });
  });

  it('without an address there is no subscription', () => {
    synth(DEFAULTS).template.resourceCountIs('AWS::SNS::Subscription', 0);
  });
});
