// The rotation functions and their schedules, the database provisioner, the
// web app fleet and its image, the database and its secrets, a clean rollback,
// and the alerts, alarms and dashboard.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Match } from 'aws-cdk-lib/assertions';
import { ROTATION_MEMORY_MB } from '../lib/rotation';
import { ARM_ONE_INSTANCE, DEFAULTS, LEAN, SINGLE_USER_CMK } from './configurations';
import { refsOf, resourcesOfType, synth, type Synthesised, waitsFor } from './helpers';

/** `${address}:${port}` of the database instance, as the template renders DB_ENDPOINTS / APP_DB_ENDPOINTS. */
function dbEndpoints(s: Synthesised): unknown {
  const db = s.logicalId(s.stack.database.instance);
  return { 'Fn::Join': ['', [{ 'Fn::GetAtt': [db, 'Endpoint.Address'] }, ':', { 'Fn::GetAtt': [db, 'Endpoint.Port'] }]] };
}

function userData(s: Synthesised, launchTemplate: Synthesised['stack']['webApp']['launchTemplate'] = s.stack.webApp.launchTemplate): string {
  const template = s.json.Resources[s.logicalId(launchTemplate)].Properties!;
  // Fn::Base64 of a Fn::Join: keep the literal parts, mark the tokens.
  const join = template.LaunchTemplateData.UserData['Fn::Base64'];
  if (typeof join === 'string') return join;
  return (join['Fn::Join'][1] as unknown[]).map((part) => (typeof part === 'string' ? part : `<${JSON.stringify(part)}>`)).join('');
}

describe('rotation function', () => {
  for (const [name, context, strategy] of [
    ['DEFAULTS', DEFAULTS, 'alternating-users'],
    ['SINGLE_USER_CMK', SINGLE_USER_CMK, 'single-user'],
  ] as const) {
    it(`${name}: provided.al2023 x86_64 bootstrap (what ship-check.sh rotates with) in the VPC, no reserved concurrency, 30 s, strategy ${strategy}`, () => {
      const s = synth(context);
      const fn = s.json.Resources[s.logicalId(s.stack.appRotation.function)].Properties!;
      assert.equal(fn.Runtime, 'provided.al2023');
      assert.equal(fn.Handler, 'bootstrap');
      assert.deepEqual(fn.Architectures, ['x86_64']);
      assert.equal(fn.ReservedConcurrentExecutions, undefined);
      assert.equal(fn.MemorySize, ROTATION_MEMORY_MB);
      assert.equal(fn.Timeout, 30);
      assert.deepEqual(fn.Environment.Variables, {
        ROTATION_STRATEGY: strategy,
        PASSWORD_LENGTH: '32',
        EXCLUDE_CHARACTERS: '/@"\'\\',
        DB_CA_BUNDLE: '/opt/rds-ca/bundle.pem',
        DB_TLS: 'verify-full',
        // The one server the function may log in at (the master's server never comes from the app secret).
        DB_ENDPOINTS: dbEndpoints(s),
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
        CompatibleArchitectures: ['x86_64'],
      });
    });
  }

  it('the architecture follows the context (for an x86-64 build)', () => {
    const s = synth(ARM_ONE_INSTANCE);
    const fn = s.json.Resources[s.logicalId(s.stack.appRotation.function)].Properties!;
    assert.deepEqual(fn.Architectures, ['x86_64']);
  });

  it('no function anywhere reserves concurrency (a new account has a pool of 10 and refuses it)', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK, ARM_ONE_INSTANCE]) {
      for (const [id, fn] of resourcesOfType(synth(context).json, 'AWS::Lambda::Function')) {
        assert.equal(fn.ReservedConcurrentExecutions, undefined, id);
      }
    }
  });

  it('every function running the bootstrap binary: one memory size, the strategy and the TLS floor set explicitly', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK]) {
      const s = synth(context);
      // provided.al2023 with the RDS CA layer (cdk-ecr-deployment's copy function is provided.al2023 too, without it).
      const bootstraps = resourcesOfType(s.json, 'AWS::Lambda::Function').filter(([, fn]) => fn.Runtime === 'provided.al2023' && fn.Layers);
      // app, owner (and master) rotations, and the provisioner
      assert.equal(bootstraps.length, s.stack.masterRotation ? 4 : 3);
      for (const [id, fn] of bootstraps) {
        assert.equal(fn.MemorySize, ROTATION_MEMORY_MB, id);
        // Rotations need their strategy; the provisioner (handler `provision`) has none.
        if (fn.Handler === 'bootstrap') {
          assert.match(fn.Environment.Variables.ROTATION_STRATEGY, /^(single-user|alternating-users)$/, id);
        } else {
          assert.equal(fn.Environment.Variables.ROTATION_STRATEGY, undefined, id);
        }
        assert.equal(fn.Environment.Variables.DB_TLS, 'verify-full', id);
        assert.equal(fn.Environment.Variables.DB_CA_BUNDLE, '/opt/rds-ca/bundle.pem', id);
        assert.deepEqual(fn.Environment.Variables.DB_ENDPOINTS, dbEndpoints(s), id);
      }
      const strategy = (r: { function: unknown }) => s.json.Resources[s.logicalId(r.function as never)].Properties!.Environment.Variables.ROTATION_STRATEGY;
      // The owner's login always rotates on its own (it must stay the schema's owner).
      assert.equal(strategy(s.stack.ownerRotation), 'single-user');
      if (s.stack.masterRotation) assert.equal(strategy(s.stack.masterRotation), 'single-user');
    }
  });
});

describe('database provisioner', () => {
  it("is the bootstrap binary with handler `provision`, in the functions' subnets and security group", () => {
    const s = synth(DEFAULTS);
    const fn = s.json.Resources[s.logicalId(s.stack.provisioner.function)].Properties!;
    assert.equal(fn.Handler, 'provision');
    assert.equal(fn.Runtime, 'provided.al2023');
    assert.deepEqual(fn.Code, s.json.Resources[s.logicalId(s.stack.appRotation.function)].Properties!.Code, 'the same artifact');
    assert.deepEqual(fn.VpcConfig, {
      SecurityGroupIds: [{ 'Fn::GetAtt': [s.logicalId(s.stack.network.rotationSecurityGroup), 'GroupId'] }],
      SubnetIds: s.stack.network.vpc.selectSubnets({ subnetGroupName: 'rotation' }).subnetIds.map(s.ref),
    });
    const db = s.stack.database;
    assert.deepEqual(fn.Environment.Variables, {
      DB_CA_BUNDLE: '/opt/rds-ca/bundle.pem',
      DB_TLS: 'verify-full',
      DB_ENDPOINTS: dbEndpoints(s),
      RUST_LOG: 'info',
      // Anchored: the custom resource's properties must name these.
      PROVISION_MASTER_SECRET_ARN: s.ref(db.masterSecretAttachment.secretArn),
      PROVISION_APP_SECRET_ARN: s.ref(db.appSecretAttachment.secretArn),
      PROVISION_OWNER_SECRET_ARN: s.ref(db.ownerSecretAttachment.secretArn),
      PROVISION_DATABASE: 'app',
    });
    assert.equal(fn.Layers.length, 1);
  });

  it('the custom resource names the three secrets as attached to the instance (host and port in them), nothing else', () => {
    const s = synth(DEFAULTS);
    const db = s.stack.database;
    const resource = s.json.Resources[s.logicalId(s.stack.provisioner.resource)];
    assert.equal(resource.Type, 'Custom::DatabaseLogins');
    const { ServiceToken, ...rest } = resource.Properties!;
    assert.ok(ServiceToken, 'a service token');
    assert.deepEqual(rest, {
      MasterSecretArn: s.ref(db.masterSecretAttachment.secretArn),
      AppSecretArn: s.ref(db.appSecretAttachment.secretArn),
      OwnerSecretArn: s.ref(db.ownerSecretAttachment.secretArn),
    });
    // It waits for the database, its network path (the endpoint and the rules).
    for (const dependency of [db.instance, s.stack.network.secretsManagerEndpoint]) {
      assert.ok(resource.DependsOn?.includes(s.logicalId(dependency)), `waits for ${dependency.node.path}`);
    }
  });

  it('the owner secret is generated by the stack and attached to the instance, like the others', () => {
    const s = synth(DEFAULTS);
    const owner = s.json.Resources[s.logicalId(s.stack.database.ownerSecret)].Properties!;
    assert.equal(owner.GenerateSecretString.SecretStringTemplate, '{"username":"app_owner","dbname":"app"}');
    assert.equal(owner.GenerateSecretString.GenerateStringKey, 'password');
    assert.equal(owner.SecretString, undefined);
    assert.equal(resourcesOfType(s.json, 'AWS::SecretsManager::SecretTargetAttachment').length, 3);
  });
});

describe('rotation schedule', () => {
  it('rotates the app, owner and master secrets monthly by default, each in a window of its own, through their functions', () => {
    const s = synth(DEFAULTS);
    const schedules = resourcesOfType(s.json, 'AWS::SecretsManager::RotationSchedule');
    assert.equal(schedules.length, 3);
    const db = s.stack.database;
    for (const [rotation, attachment, hour] of [
      [s.stack.appRotation, db.appSecretAttachment, 4],
      [s.stack.ownerRotation, db.ownerSecretAttachment, 8],
      [s.stack.masterRotation!, db.masterSecretAttachment, 12],
    ] as const) {
      const schedule = s.json.Resources[s.logicalId(rotation.schedule)];
      assert.deepEqual(schedule.Properties, {
        SecretId: s.ref(attachment.secretArn),
        RotationLambdaARN: s.ref(rotation.function.functionArn),
        // The first Tuesday of the month, a two-hour window from the given hour (UTC).
        RotationRules: { ScheduleExpression: `cron(0 ${hour} ? * TUE#1 *)`, Duration: '2h' },
        RotateImmediatelyOnUpdate: false,
      });
      // Secrets Manager checks the invoke permission when the schedule is created.
      const permission = resourcesOfType(s.json, 'AWS::Lambda::Permission').find(
        ([, p]) => JSON.stringify(p.FunctionName) === JSON.stringify(s.ref(rotation.function.functionArn)),
      )!;
      assert.ok(schedule.DependsOn?.includes(permission[0]), 'the schedule waits for the invoke permission');
      // Secrets Manager runs testSecret when the schedule is created: the login must exist by then.
      assert.ok(
        schedule.DependsOn?.includes(s.logicalId(s.stack.provisioner.resource)),
        `${rotation.node.id}: the schedule waits for the database logins`,
      );
    }
  });

  it("no two windows overlap, the master's never meets the app's, and none meets RDS's backup or maintenance window", () => {
    const hours = (w: { ScheduleExpression: string; Duration: string }) => {
      const start = Number(/^cron\(0 (\d+) /.exec(w.ScheduleExpression)![1]);
      return [start, start + Number(w.Duration.replace(/h$/, ''))] as const;
    };
    for (const context of [DEFAULTS, ARM_ONE_INSTANCE, LEAN]) {
      const s = synth(context);
      const windows = resourcesOfType(s.json, 'AWS::SecretsManager::RotationSchedule').map(([, r]) => hours(r.RotationRules));
      // RDS: backup 00:00-00:30 daily, maintenance Sunday 01:00-01:30.
      const [, dbProps] = resourcesOfType(s.json, 'AWS::RDS::DBInstance')[0];
      assert.equal(dbProps.PreferredBackupWindow, '00:00-00:30');
      assert.equal(dbProps.PreferredMaintenanceWindow, 'sun:01:00-sun:01:30');
      const taken: (readonly [number, number])[] = [[0, 2]];
      for (const w of windows) {
        for (const t of taken) assert.ok(w[1] <= t[0] || w[0] >= t[1], `window ${w} overlaps ${t}`);
        taken.push(w);
      }
    }
  });

  it('the cadence is configurable (daily, weekly, monthly; nothing else), and the master secret can be left out', () => {
    const s = synth(SINGLE_USER_CMK);
    const schedules = resourcesOfType(s.json, 'AWS::SecretsManager::RotationSchedule');
    assert.equal(schedules.length, 2);
    assert.deepEqual(
      schedules.map(([, schedule]) => schedule.RotationRules),
      [
        { ScheduleExpression: 'cron(0 4 ? * TUE *)', Duration: '2h' },
        { ScheduleExpression: 'cron(0 8 ? * TUE *)', Duration: '2h' },
      ],
    );
    assert.deepEqual(
      resourcesOfType(synth(LEAN).json, 'AWS::SecretsManager::RotationSchedule').map(([, r]) => r.RotationRules.ScheduleExpression),
      ['cron(0 4 * * ? *)', 'cron(0 8 * * ? *)', 'cron(0 12 * * ? *)'],
    );
    assert.deepEqual(
      schedules.map(([, schedule]) => schedule.SecretId),
      [s.stack.database.appSecretAttachment, s.stack.database.ownerSecretAttachment].map((a) => s.ref(a.secretArn)),
    );
  });
});

describe('web app fleet', () => {
  it('instances: IMDSv2 with a hop limit of 2, an encrypted root volume, no key pair, the app security group', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK]) {
      const s = synth(context);
      const data = s.json.Resources[s.logicalId(s.stack.webApp.launchTemplate)].Properties!.LaunchTemplateData;
      assert.deepEqual(data.MetadataOptions, { HttpEndpoint: 'enabled', HttpTokens: 'required', HttpPutResponseHopLimit: 2 });
      assert.equal(data.KeyName, undefined);
      assert.equal(data.NetworkInterfaces, undefined, 'no interface that could carry a public IP');
      assert.deepEqual(data.SecurityGroupIds, [{ 'Fn::GetAtt': [s.logicalId(s.stack.network.appSecurityGroup), 'GroupId'] }]);
      const ebs = data.BlockDeviceMappings[0].Ebs;
      assert.equal(ebs.Encrypted, true);
      if (s.stack.key) assert.deepEqual(ebs.KmsKeyId, s.ref(s.stack.key.keyArn));
      assert.match(JSON.stringify(data.ImageId), /amazonlinuxlatestal2023/);
    }
  });

  it('an Auto Scaling group of the configured size in both app subnets, EC2 health checks only, rolling replacement on signals', () => {
    for (const [context, size] of [
      [DEFAULTS, 2],
      [SINGLE_USER_CMK, 3],
      [ARM_ONE_INSTANCE, 1],
    ] as const) {
      const s = synth(context);
      const group = s.json.Resources[s.logicalId(s.stack.webApp.group)] as Record<string, any>;
      assert.equal(group.Properties.MinSize, String(size));
      assert.equal(group.Properties.MaxSize, String(size + 1), 'room for one new instance during a replacement');
      assert.equal(group.Properties.DesiredCapacity, undefined, 'a deployment never resets the size');
      // Never the load balancer's /ready (it logs in to PostgreSQL): a database
      // outage must route traffic away, not terminate the fleet.
      assert.equal(group.Properties.HealthCheckType, 'EC2');
      assert.equal(group.Properties.HealthCheckGracePeriod, 900);
      assert.deepEqual(group.Properties.TargetGroupARNs, [s.ref(s.stack.webApp.targetGroup!.targetGroupArn)]);
      assert.ok(
        group.Properties.MetricsCollection[0].Granularity === '1Minute',
        'group metrics collected (GroupInServiceInstances alarm)',
      );
      assert.deepEqual(
        group.Properties.VPCZoneIdentifier,
        s.stack.network.vpc.selectSubnets({ subnetGroupName: 'app' }).subnetIds.map(s.ref),
      );
      assert.deepEqual(group.UpdatePolicy.AutoScalingRollingUpdate, {
        MaxBatchSize: 1,
        MinInstancesInService: size,
        PauseTime: 'PT15M',
        // CDK's default, AWS's advice: no health-check replacements or rebalancing while CloudFormation replaces.
        SuspendProcesses: ['HealthCheck', 'ReplaceUnhealthy', 'AZRebalance', 'AlarmNotification', 'ScheduledActions', 'InstanceRefresh'],
        WaitOnResourceSignals: true,
      });
      assert.deepEqual(group.CreationPolicy.ResourceSignal, { Count: size, Timeout: 'PT15M' });
      // The schema is migrated (by its own instance) and the image copied before the fleet changes.
      assert.ok(group.DependsOn.includes(s.logicalId(s.stack.migration.instance)), 'the group waits for the migration');
      assert.ok(group.DependsOn.includes(resourcesOfType(s.json, 'Custom::CDKECRDeployment')[0][0]), 'the group waits for the image copy');
    }
  });

  it('an internal load balancer in both app subnets, HTTP on 80, probing the database-backed /ready on 8080', () => {
    const s = synth(DEFAULTS);
    const lb = s.json.Resources[s.logicalId(s.stack.webApp.loadBalancer!)].Properties!;
    assert.equal(lb.Scheme, 'internal');
    assert.deepEqual(lb.Subnets, s.stack.network.vpc.selectSubnets({ subnetGroupName: 'app' }).subnetIds.map(s.ref));
    assert.deepEqual(lb.SecurityGroups, [{ 'Fn::GetAtt': [s.logicalId(s.stack.network.loadBalancerSecurityGroup!), 'GroupId'] }]);
    assert.ok(
      lb.LoadBalancerAttributes.some((a: any) => a.Key === 'routing.http.drop_invalid_header_fields.enabled' && a.Value === 'true'),
      'drops invalid header fields',
    );
    s.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', { Port: 80, Protocol: 'HTTP' });
    const tg = s.json.Resources[s.logicalId(s.stack.webApp.targetGroup!)].Properties!;
    assert.equal(tg.Port, 8080);
    assert.equal(tg.HealthCheckPath, '/ready');
    assert.deepEqual(tg.Matcher, { HttpCode: '200' });
  });

  it('user data: serve read-only without capabilities, admin port on loopback, logs to the app log group; no migrate, no owner secret', () => {
    const s = synth(DEFAULTS);
    const script = userData(s);
    assert.match(script, /retry dnf install -y docker/);
    const lines = script.split('\n');
    assert.ok(!lines.some((l) => l.endsWith(' migrate')), 'serving instances do not migrate');
    assert.ok(!script.includes(JSON.stringify(s.ref(s.stack.database.ownerSecret.secretArn))), 'serving instances never see the owner secret');
    const serveAt = lines.findIndex((l) => l.startsWith('ExecStart=/usr/bin/docker run'));
    const envs = (line: string) => [...line.matchAll(/--env (\w+)=(\S+)/g)].map((m) => [m[1], m[2]]);
    const secret = (x: { secretArn: string }) => `<${JSON.stringify(s.ref(x.secretArn))}>`;
    const endpoint = `<${JSON.stringify({ 'Fn::GetAtt': [s.logicalId(s.stack.database.instance), 'Endpoint.Address'] })}>:<${JSON.stringify({ 'Fn::GetAtt': [s.logicalId(s.stack.database.instance), 'Endpoint.Port'] })}>`;
    const serve = lines[serveAt];
    assert.deepEqual(envs(serve), [
      ['AWS_REGION', 'eu-west-1'],
      ['APP_DB_CA_BUNDLE', '/etc/rds-ca/bundle.pem'],
      ['APP_DB_TLS', 'verify-full'],
      // The app connects to the pinned endpoint only.
      ['APP_DB_ENDPOINTS', endpoint],
      ['APP_SECRET_ID', secret(s.stack.database.appSecret)],
      ['APP_LISTEN_ADDR', '0.0.0.0:8080'],
      ['APP_ADMIN_LISTEN_ADDR', '0.0.0.0:9090'],
    ]);
    for (const flag of ['--read-only', '--cap-drop ALL', '--security-opt no-new-privileges', '--log-driver awslogs']) {
      assert.ok(serve.includes(` ${flag} `), `docker run lacks ${flag}: ${serve}`);
    }
    assert.ok(serve.includes(`--log-opt awslogs-group=<${JSON.stringify(s.ref(s.stack.webApp.logGroup.logGroupName))}>`), `log group: ${serve}`);
    assert.match(serve, /--volume \/etc\/pki\/rds\/bundle.pem:\/etc\/rds-ca\/bundle.pem:ro/);
    // The app port for the load balancer; the admin port on the host's loopback only.
    assert.deepEqual([...serve.matchAll(/--publish (\S+)/g)].map((m) => m[1]), ['8080:8080', '127.0.0.1:9090:9090']);
    for (const forbidden of ['--privileged', '--network host', '--net=host', 'docker.sock', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', '"password"']) {
      assert.ok(!script.includes(forbidden), `user data contains ${forbidden}`);
    }
    assert.match(script, /-----BEGIN CERTIFICATE-----/);
    // Ready, then the signal that creation and rolling replacement wait for.
    const signal = lines.findIndex((l) => l === 'signal SUCCESS');
    const ready = lines.findIndex((l) => l === 'curl -sf -o /dev/null http://127.0.0.1:8080/ready');
    assert.ok(ready > serveAt && signal > ready, 'signals SUCCESS only after /ready answered');
    assert.ok(lines.includes("trap 'signal FAILURE' ERR"), 'any failed boot step signals FAILURE');
    assert.match(script, new RegExp(`--logical-resource-id ${s.logicalId(s.stack.webApp.group)} `));
  });

  it('user data retries what fails transiently (metadata, packages, the signal) instead of failing the boot', () => {
    const s = synth(DEFAULTS);
    for (const script of [userData(s), userData(s, s.stack.migration.launchTemplate)]) {
      const lines = script.split('\n');
      const retryAt = lines.findIndex((l) => l.startsWith('retry() {'));
      assert.ok(retryAt >= 0 && retryAt < lines.findIndex((l) => l.includes('dnf install')), 'retry() defined before use');
      for (const step of ['dnf install -y docker', 'systemctl enable --now docker', 'curl -sf -X PUT', 'aws cloudformation signal-resource']) {
        const line = lines.find((l) => l.includes(step))!;
        assert.match(line, /retry /, `${step} is retried: ${line}`);
      }
    }
    // The retry function itself: bounded, with a pause, and the last attempt's status is the result.
    const fn = userData(s).split('\n').find((l) => l.startsWith('retry() {'))!;
    assert.match(fn, /for n in 1 2 3 4 5/);
    assert.match(fn, /sleep/);
  });

  it("the image is published to the bootstrap's repository and copied into the stack's own, which the instances pull from", () => {
    for (const context of [DEFAULTS, ARM_ONE_INSTANCE]) {
      const s = synth(context);
      const repoId = s.logicalId(s.stack.image.repository);
      // <account from the repository's ARN>.dkr.ecr.<region>.<suffix>/<repository>:<asset hash>
      const script = userData(s);
      assert.ok(
        script.includes(`docker pull <{"Fn::Select":[4,{"Fn::Split":[":",{"Fn::GetAtt":["${repoId}","Arn"]}]}]}>.dkr.ecr.`),
        "pulls from the stack's own repository",
      );
      assert.match(script, new RegExp(`/<\\{"Ref":"${repoId}"\\}>:[0-9a-f]{64}\\n`), 'tagged with the asset hash');
      assert.ok(!script.includes('container-assets'), "the instances never read the bootstrap's shared repository");
      assert.equal(resourcesOfType(s.json, 'AWS::ECR::RegistryScanningConfiguration').length, 0, "the account's scanning settings are not touched");
      const repos = resourcesOfType(s.json, 'AWS::ECR::Repository');
      assert.equal(repos.length, 1);
      assert.deepEqual(repos[0][1].ImageScanningConfiguration, { ScanOnPush: true });
      assert.equal(repos[0][1].RepositoryName, undefined, 'a generated name: nothing blocks a replacement or a second deployment');
      assert.equal(repos[0][1].EmptyOnDelete, true);
      // The copy: from the bootstrap's repository (what cdk deploy publishes to) into this one, same tag.
      const [, copy] = resourcesOfType(s.json, 'Custom::CDKECRDeployment')[0];
      assert.match(JSON.stringify(copy.SrcImage), /cdk-hnb659fds-container-assets-123456789012-eu-west-1:[0-9a-f]{64}/);
      assert.match(JSON.stringify(copy.DestImage), new RegExp(`"Ref":"${repoId}"`));
      // The stack is one: nothing for the CLI to order.
      assert.deepEqual(s.stack.dependencies, []);
      const [, copyFn] = resourcesOfType(s.json, 'AWS::Lambda::Function').find(([id]) => id.startsWith('CustomCDKECRDeployment'))!;
      assert.deepEqual(copyFn.Architectures ?? ['x86_64'], ['x86_64'], "cdk-ecr-deployment's binary is x86-64");
    }
  });

  it('only the copy function may push to the repository (an explicit deny for every other principal)', () => {
    const s = synth(DEFAULTS);
    const [, repo] = resourcesOfType(s.json, 'AWS::ECR::Repository')[0];
    assert.deepEqual(repo.RepositoryPolicyText.Statement, [
      {
        Sid: 'OnlyTheCopyFunctionPushes',
        Effect: 'Deny',
        Principal: { AWS: '*' },
        Action: ['ecr:CompleteLayerUpload', 'ecr:InitiateLayerUpload', 'ecr:PutImage', 'ecr:UploadLayerPart'],
        Condition: { ArnNotEquals: { 'aws:PrincipalArn': { 'Fn::GetAtt': [s.logicalId(s.stack.image.copyRole), 'Arn'] } } },
      },
    ]);
  });
});

describe('schema migration', () => {
  it('runs `web-app migrate` as the owner on a one-shot instance the fleet waits for, then stops it', () => {
    const s = synth(DEFAULTS);
    const m = s.stack.migration;
    const instance = s.json.Resources[s.logicalId(m.instance)] as Record<string, any>;
    assert.equal(instance.Type, 'AWS::EC2::Instance');
    assert.deepEqual(instance.CreationPolicy, { ResourceSignal: { Count: 1, Timeout: 'PT20M' } });
    // A new image is a new launch template version, which replaces the instance: one migration per image.
    assert.deepEqual(instance.Properties.LaunchTemplate.Version, { 'Fn::GetAtt': [s.logicalId(m.launchTemplate), 'LatestVersionNumber'] });
    const data = s.json.Resources[s.logicalId(m.launchTemplate)].Properties!.LaunchTemplateData;
    assert.equal(data.InstanceInitiatedShutdownBehavior, 'stop');
    assert.deepEqual(data.MetadataOptions, { HttpEndpoint: 'enabled', HttpTokens: 'required', HttpPutResponseHopLimit: 2 });
    const script = userData(s, m.launchTemplate);
    const lines = script.split('\n');
    const migrate = lines.find((l) => l.includes('docker run') && l.endsWith(' migrate'))!;
    assert.ok(migrate.startsWith('retry '), 'migrate (idempotent) is retried');
    assert.ok(migrate.includes(`--env APP_OWNER_SECRET_ID=<${JSON.stringify(s.ref(s.stack.database.ownerSecret.secretArn))}>`));
    assert.ok(migrate.includes('--env APP_DB_ENDPOINTS='), 'the pinned endpoint');
    assert.ok(!script.includes(JSON.stringify(s.ref(s.stack.database.appSecret.secretArn))), 'not the app secret');
    assert.ok(lines.indexOf('signal SUCCESS') > lines.indexOf(migrate), 'signals after the migration');
    assert.ok(lines.includes("trap 'shutdown -h now' EXIT"), 'stops itself');
    assert.match(script, new RegExp(`--logical-resource-id ${s.logicalId(m.instance)} `));
    // After the logins and the image copy; before the fleet.
    for (const dep of [s.logicalId(s.stack.provisioner.resource), resourcesOfType(s.json, 'Custom::CDKECRDeployment')[0][0]]) {
      assert.ok(instance.DependsOn.includes(dep), `waits for ${dep}`);
    }
  });
});

describe('a failed first deployment rolls back cleanly', () => {
  it('every log group: generated name, a retention, kept on update and delete, removed on a create rollback', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK, LEAN]) {
      const s = synth(context);
      const groups = Object.entries(s.json.Resources).filter(([, r]) => r.Type === 'AWS::Logs::LogGroup') as [string, any][];
      assert.ok(groups.length >= 8, `only ${groups.length} log groups`);
      for (const [id, group] of groups) {
        assert.equal(group.DeletionPolicy, 'RetainExceptOnCreate', id);
        assert.equal(group.Properties.LogGroupName, undefined, `${id} has a fixed name`);
        assert.equal(group.Properties.RetentionInDays, 365, `${id} retention`);
      }
    }
  });

  it('every function logs to a log group with a retention, so Lambda creates none that never expires', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK, LEAN]) {
      const s = synth(context);
      for (const [id, fn] of resourcesOfType(s.json, 'AWS::Lambda::Function')) {
        // CDK's log retention function sets its own log group's retention (1 day) itself.
        if (id.startsWith('LogRetention')) continue;
        const group = fn.LoggingConfig?.LogGroup?.Ref as string | undefined;
        assert.ok(group, `${id} logs to a group Lambda would create without retention`);
        assert.equal(s.json.Resources[group].Properties!.RetentionInDays, 365, id);
      }
      // The database's log group (its name follows the generated identifier): retention set by CDK's resource.
      const [, retention] = resourcesOfType(s.json, 'Custom::LogRetention')[0];
      assert.deepEqual(retention.LogGroupName, {
        'Fn::Join': ['', ['/aws/rds/instance/', { Ref: s.logicalId(s.stack.database.instance) }, '/postgresql']],
      });
      assert.equal(retention.RetentionInDays, 365);
    }
  });

  it('no fixed physical names that would block a replacing update (database, repository, log groups)', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK]) {
      const s = synth(context);
      const named: string[] = [];
      for (const [id, r] of Object.entries(s.json.Resources)) {
        const p = r.Properties ?? {};
        for (const key of ['DBInstanceIdentifier', 'RepositoryName', 'LogGroupName', 'FunctionName', 'RoleName', 'TopicName', 'Name']) {
          // A literal string is a fixed name; a Ref/GetAtt to a generated one is not.
          if (typeof p[key] === 'string' && r.Type !== 'Custom::LogRetention') named.push(`${id}.${key}`);
        }
      }
      assert.deepEqual(named, []);
    }
  });

  it('the database is created unprotected; protection is turned on last, after every other resource', () => {
    const s = synth(DEFAULTS);
    s.template.hasResourceProperties('AWS::RDS::DBInstance', { DeletionProtection: false });
    const guards = resourcesOfType(s.json, 'Custom::DatabaseDeletionProtection');
    assert.equal(guards.length, 1);
    const guard = s.json.Resources[guards[0][0]] as Record<string, any>;
    // modifyDBInstance on the generated identifier (a Ref), protection on, now.
    const create = JSON.stringify(guard.Properties.Create);
    assert.ok(create.includes(`{"Ref":"${s.logicalId(s.stack.database.instance)}"}`), create);
    assert.match(create, /\\"DeletionProtection\\":true,\\"ApplyImmediately\\":true/);
    assert.deepEqual(guard.Properties.Update, guard.Properties.Create);
    assert.equal(guard.Properties.Delete, undefined, 'removing the guard never unprotects the database');
    // Everything the guard waits for, directly or through what those wait for
    // (DependsOn, Ref, Fn::GetAtt): that must be the whole stack but the guard's
    // own parts and CDK's lookups.
    const guardWaitsFor = waitsFor(s.json, guards[0][0]);
    const guardParts = new Set([guards[0][0], ...refsOf(guard.Properties)]);
    for (const [id, resource] of Object.entries(s.json.Resources)) {
      if (guardParts.has(id) || id.startsWith('DatabaseDeletionProtection')) continue;
      assert.ok(guardWaitsFor.has(id), `the guard does not wait for ${id} (${resource.Type})`);
    }
  });

  it('with -c deletionProtection=false there is no guard', () => {
    const s = synth(SINGLE_USER_CMK);
    assert.equal(s.stack.deletionProtection, undefined);
    assert.equal(resourcesOfType(s.json, 'Custom::DatabaseDeletionProtection').length, 0);
  });
});

describe('database', () => {
  it('is PostgreSQL at its major version (RDS picks and upgrades the minor), encrypted, private, TLS forced', () => {
    const s = synth(DEFAULTS);
    s.template.hasResourceProperties('AWS::RDS::DBInstance', {
      Engine: 'postgres',
      // Not a minor that RDS will stop offering: new deployments keep working.
      EngineVersion: '17',
      AutoMinorVersionUpgrade: true,
      StorageEncrypted: true,
      PubliclyAccessible: false,
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
      StorageEncrypted: true,
      KmsKeyId: s.ref(s.stack.key!.keyArn),
    });
    const other = synth(ARM_ONE_INSTANCE);
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
    assert.equal(resourcesOfType(s.json, 'AWS::SecretsManager::SecretTargetAttachment').length, 3);

    const single = synth(SINGLE_USER_CMK);
    const appSingle = single.json.Resources[single.logicalId(single.stack.database.appSecret)].Properties!;
    assert.equal(appSingle.GenerateSecretString.SecretStringTemplate, '{"username":"app","dbname":"app"}');
    assert.deepEqual(appSingle.KmsKeyId, single.ref(single.stack.key!.keyArn));
  });
});

// The rotation events Secrets Manager writes to CloudTrail (and so to
// EventBridge as "AWS Service Event via CloudTrail"), as AWS documents them:
// https://docs.aws.amazon.com/secretsmanager/latest/userguide/cloudtrail_log_entries.html#cloudtrail_log_entries_rotation
// ("Log entries for rotation"; RotationStarted, RotationSucceeded, RotationFailed
// and RotationAbandoned are also listed on
// https://docs.aws.amazon.com/secretsmanager/latest/userguide/retrieve-ct-entries.html).
// Written out here, not imported from lib/operations.ts: the rule must match
// AWS's names, not whatever the code calls them.
const DOCUMENTED_ROTATION_EVENTS = {
  RotationStarted: 'started',
  RotationSucceeded: 'succeeded',
  RotationFailed: 'failed',
  RotationAbandoned: 'failed', // a pending version was overwritten: the rotation did not complete
  TestRotationStarted: 'started',
  TestRotationSucceeded: 'succeeded',
  TestRotationFailed: 'failed', // the deployment-time test of a new rotation configuration failed
} as const;
const DOCUMENTED_FAILURES = Object.entries(DOCUMENTED_ROTATION_EVENTS)
  .filter(([, outcome]) => outcome === 'failed')
  .map(([name]) => name)
  .sort();

describe('rotation failure alerts', () => {
  it("an EventBridge rule sends every documented failure event, and only those, to the topic, e-mailed to the configured address", () => {
    const s = synth(SINGLE_USER_CMK);
    const topic = s.logicalId(s.stack.operations.topic);
    const rule = s.json.Resources[s.logicalId(s.stack.operations.rule)].Properties!;
    assert.deepEqual([...rule.EventPattern.detail.eventName].sort(), DOCUMENTED_FAILURES);
    assert.deepEqual(rule.EventPattern, {
      source: ['aws.secretsmanager'],
      'detail-type': ['AWS Service Event via CloudTrail'],
      detail: { eventSource: ['secretsmanager.amazonaws.com'], eventName: rule.EventPattern.detail.eventName },
    });
    assert.equal(rule.State, 'ENABLED');
    assert.deepEqual(rule.Targets, [{ Arn: { Ref: topic }, Id: 'RotationAlertsTopic' }]);
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
          Match.objectLike({
            Sid: 'PublishFromThisStacksAlarms',
            Principal: { Service: 'cloudwatch.amazonaws.com' },
            Action: 'sns:Publish',
            Condition: {
              ArnLike: { 'aws:SourceArn': 'arn:aws:cloudwatch:eu-west-1:123456789012:alarm:PgRotation-*' },
              StringEquals: { 'aws:SourceAccount': '123456789012' },
            },
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

describe('alarms and dashboard', () => {
  it('alarms on each rotation function (errors, duration near the timeout), target 5xx and unhealthy instances, all to the topic', () => {
    const s = synth(DEFAULTS);
    const alarms = resourcesOfType(s.json, 'AWS::CloudWatch::Alarm');
    const topic = { Ref: s.logicalId(s.stack.operations.topic) };
    for (const [id, a] of alarms) assert.deepEqual(a.AlarmActions, [topic], id);
    const watched = (metric: string, namespace: string) => alarms.filter(([, a]) => a.MetricName === metric && a.Namespace === namespace);
    const fnOf = (a: Record<string, any>) => a.Dimensions.find((d: any) => d.Name === 'FunctionName').Value;
    const functions = [s.stack.appRotation, s.stack.ownerRotation, s.stack.masterRotation!].map((r) => s.ref(r.function.functionName));
    assert.deepEqual(watched('Errors', 'AWS/Lambda').map(([, a]) => fnOf(a)), functions);
    for (const [, a] of watched('Errors', 'AWS/Lambda')) assert.equal(a.Threshold, 1);
    assert.deepEqual(watched('Duration', 'AWS/Lambda').map(([, a]) => fnOf(a)), functions);
    for (const [, a] of watched('Duration', 'AWS/Lambda')) assert.equal(a.Threshold, 24000, '80 % of the 30 s timeout');
    assert.equal(watched('HTTPCode_Target_5XX_Count', 'AWS/ApplicationELB').length, 1);
    assert.equal(watched('UnHealthyHostCount', 'AWS/ApplicationELB').length, 1);
    assert.equal(alarms.length, 3 * 4 + 2 + 5);
  });

  it("alarms when a rotation function's pre-flight finds a failed check, from its summary log line", () => {
    const s = synth(DEFAULTS);
    const rotations = [s.stack.appRotation, s.stack.ownerRotation, s.stack.masterRotation!];
    const filters = s.stack.operations.preflightFilters.map((f) => s.json.Resources[s.logicalId(f)].Properties!);
    assert.deepEqual(filters.map((f) => f.LogGroupName), rotations.map((r) => s.ref(r.logGroup.logGroupName)));
    for (const f of filters) {
      assert.equal(f.FilterPattern, '{ $.fields.message = "pre-flight" }');
      assert.equal(f.MetricTransformations[0].MetricValue, '$.fields.failed');
      assert.equal(f.MetricTransformations[0].MetricNamespace, 'PgRotation/Rotation');
    }
    const alarms = resourcesOfType(s.json, 'AWS::CloudWatch::Alarm').filter(
      ([, a]) => a.Namespace === 'PgRotation/Rotation' && a.MetricName.endsWith('PreflightFailedChecks'),
    );
    assert.deepEqual(
      alarms.map(([, a]) => a.MetricName),
      filters.map((f) => f.MetricTransformations[0].MetricName),
    );
    for (const [, a] of alarms) {
      assert.equal(a.Threshold, 1);
      assert.equal(a.ComparisonOperator, 'GreaterThanOrEqualToThreshold');
    }
  });

  it('alarms when a setSecret retires a login that still has sessions, from its evidence line', () => {
    const s = synth(DEFAULTS);
    const rotations = [s.stack.appRotation, s.stack.ownerRotation, s.stack.masterRotation!];
    const filters = s.stack.operations.retiringLoginFilters.map((f) => s.json.Resources[s.logicalId(f)].Properties!);
    assert.deepEqual(filters.map((f) => f.LogGroupName), rotations.map((r) => s.ref(r.logGroup.logGroupName)));
    for (const f of filters) {
      // The message is rotation-fn's IN_USE_MESSAGE, byte for byte (tests/tests/rotation_emergency.rs reads the line).
      assert.equal(
        f.FilterPattern,
        '{ ($.fields.message = "sessions of the login whose password changes") && ($.fields.role = "retiring") }',
      );
      assert.equal(f.MetricTransformations[0].MetricValue, '$.fields.sessions');
    }
    const alarms = resourcesOfType(s.json, 'AWS::CloudWatch::Alarm').filter(([, a]) =>
      String(a.MetricName).endsWith('RetiringLoginSessions'),
    );
    assert.deepEqual(alarms.map(([, a]) => a.MetricName), filters.map((f) => f.MetricTransformations[0].MetricName));
    for (const [, a] of alarms) assert.equal(a.Threshold, 1);
  });

  it('alarms on the database (CPU, free storage, connections), the in-service count and EventBridge delivery failures', () => {
    for (const context of [DEFAULTS, LEAN]) {
      const s = synth(context);
      const alarms = resourcesOfType(s.json, 'AWS::CloudWatch::Alarm');
      const one = (metric: string, namespace: string) => {
        const found = alarms.filter(([, a]) => a.MetricName === metric && a.Namespace === namespace);
        assert.equal(found.length, 1, `${namespace} ${metric}`);
        return found[0][1];
      };
      const db = [{ Name: 'DBInstanceIdentifier', Value: { Ref: s.logicalId(s.stack.database.instance) } }];
      const cpu = one('CPUUtilization', 'AWS/RDS');
      assert.deepEqual(cpu.Dimensions, db);
      assert.equal(cpu.Threshold, 80);
      const storage = one('FreeStorageSpace', 'AWS/RDS');
      assert.equal(storage.ComparisonOperator, 'LessThanThreshold');
      assert.equal(storage.Threshold, 2 * 1024 ** 3);
      const connections = one('DatabaseConnections', 'AWS/RDS');
      assert.equal(connections.Threshold, Math.floor(Math.floor(1024 ** 3 / 9531392) * 0.8), 't4g.micro: 80 % of max_connections');
      const inService = one('GroupInServiceInstances', 'AWS/AutoScaling');
      assert.deepEqual(inService.Dimensions, [{ Name: 'AutoScalingGroupName', Value: { Ref: s.logicalId(s.stack.webApp.group) } }]);
      assert.equal(inService.Threshold, Number(s.stack.webApp.group.node.tryGetContext('fleetSize') ?? (context === LEAN ? 1 : 2)));
      assert.equal(inService.ComparisonOperator, 'LessThanThreshold');
      const delivery = one('FailedInvocations', 'AWS/Events');
      assert.deepEqual(delivery.Dimensions, [{ Name: 'RuleName', Value: { Ref: s.logicalId(s.stack.operations.rule) } }]);
      if (context === LEAN) assert.equal(alarms.filter(([, a]) => a.Namespace === 'AWS/ApplicationELB').length, 0, 'no load balancer, no alarms on it');
    }
  });

  it("counts each instance's credential switches by secret version, from the app's switch log line", () => {
    const s = synth(DEFAULTS);
    const filter = s.json.Resources[s.logicalId(s.stack.operations.switchFilter)].Properties!;
    assert.deepEqual(filter.LogGroupName, s.ref(s.stack.webApp.logGroup.logGroupName));
    assert.equal(filter.FilterPattern, '{ $.message = "switched*" }');
    assert.deepEqual(filter.MetricTransformations, [
      { MetricName: 'CredentialSwitches', MetricNamespace: 'PgRotation/WebApp', MetricValue: '1', Dimensions: [{ Key: 'Version', Value: '$.to' }] },
    ]);
  });

  it('the dashboard shows the functions, the fleet, switches by version and the version of each instance', () => {
    const s = synth(DEFAULTS);
    const body = JSON.stringify(s.json.Resources[s.logicalId(s.stack.operations.dashboard)].Properties!.DashboardBody);
    for (const expected of [
      'Rotation function errors',
      'HTTPCode_Target_5XX_Count',
      'HealthyHostCount',
      "SEARCH('{PgRotation/WebApp,Version} MetricName=",
      'CredentialSwitches',
      'stats latest(to) as version',
      'by @logStream',
    ]) {
      assert.ok(body.includes(expected), `dashboard lacks ${expected}`);
    }
  });
});
