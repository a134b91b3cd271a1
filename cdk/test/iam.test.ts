// Least privilege, statement by statement, for every role of the stack.
// Each expected list is the complete set of statements the role holds: an
// extra grant anywhere (a managed policy, a DefaultPolicy added by a grant*
// call) fails the test.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { ARM_ONE_INSTANCE, DEFAULTS, SINGLE_USER_CMK } from './configurations';
import { actionsOf, resourcesOfType, statementsOfRole, synth, type Statement, type Synthesised } from './helpers';

const ROTATE_ACTIONS = [
  'secretsmanager:DescribeSecret',
  'secretsmanager:GetSecretValue',
  'secretsmanager:ListSecretVersionIds',
  'secretsmanager:PutSecretValue',
  'secretsmanager:UpdateSecretVersionStage',
];

const VPC_ACTIONS = [
  'ec2:AssignPrivateIpAddresses',
  'ec2:CreateNetworkInterface',
  'ec2:DeleteNetworkInterface',
  'ec2:DescribeNetworkInterfaces',
  'ec2:DescribeSubnets',
  'ec2:UnassignPrivateIpAddresses',
];

function rotationStatements(s: Synthesised, which: 'app' | 'master' | 'owner'): Statement[] {
  const rotation = { app: s.stack.appRotation, master: s.stack.masterRotation, owner: s.stack.ownerRotation }[which];
  assert.ok(rotation, `no ${which} rotation`);
  return statementsOfRole(s.json, s.logicalId(rotation.role));
}

function common(s: Synthesised, secretArn: string, logGroupArn: string): Statement[] {
  return [
    { Sid: 'RotateTheSecret', Effect: 'Allow', Action: ROTATE_ACTIONS, Resource: s.ref(secretArn) },
    { Sid: 'AttachToTheVpc', Effect: 'Allow', Action: VPC_ACTIONS, Resource: '*' },
    { Sid: 'WriteItsOwnLogs', Effect: 'Allow', Action: ['logs:CreateLogStream', 'logs:PutLogEvents'], Resource: s.ref(logGroupArn) },
  ];
}

describe('rotation function role', () => {
  it('alternating users: rotates the app secret, reads the master secret, nothing else', () => {
    const s = synth(DEFAULTS);
    const { appRotation, database } = s.stack;
    assert.deepEqual(rotationStatements(s, 'app'), [
      ...common(s, database.appSecret.secretArn, appRotation.logGroup.logGroupArn),
      { Sid: 'ReadTheMasterSecret', Effect: 'Allow', Action: 'secretsmanager:GetSecretValue', Resource: s.ref(database.masterSecret.secretArn) },
    ]);
  });

  it('single-user rotation of the master secret: no read of any other secret', () => {
    const s = synth(DEFAULTS);
    const { masterRotation, database } = s.stack;
    assert.deepEqual(rotationStatements(s, 'master'), common(s, database.masterSecret.secretArn, masterRotation!.logGroup.logGroupArn));
  });

  it("single-user rotation of the owner secret, whatever the app's strategy: its own secret only", () => {
    for (const context of [DEFAULTS, ARM_ONE_INSTANCE]) {
      const s = synth(context);
      const { ownerRotation, database } = s.stack;
      assert.deepEqual(rotationStatements(s, 'owner'), common(s, database.ownerSecret.secretArn, ownerRotation.logGroup.logGroupArn));
    }
  });

  it('single user with a customer-managed key: KMS through Secrets Manager only, no master secret', () => {
    const s = synth(SINGLE_USER_CMK);
    const { appRotation, database, key } = s.stack;
    assert.ok(key, 'a customer-managed key');
    assert.deepEqual(rotationStatements(s, 'app'), [
      ...common(s, database.appSecret.secretArn, appRotation.logGroup.logGroupArn),
      {
        Sid: 'UseTheKeyThroughSecretsManager',
        Effect: 'Allow',
        Action: ['kms:Decrypt', 'kms:GenerateDataKey'],
        Resource: s.ref(key.keyArn),
        Condition: { StringEquals: { 'kms:ViaService': 'secretsmanager.eu-west-1.amazonaws.com' } },
      },
    ]);
    assert.equal(s.stack.masterRotation, undefined);
  });

  it('has no managed policies and is assumable by Lambda only', () => {
    for (const s of [synth(DEFAULTS), synth(SINGLE_USER_CMK)]) {
      for (const rotation of [s.stack.appRotation, s.stack.ownerRotation, s.stack.masterRotation].filter((r) => r !== undefined)) {
        const role = s.json.Resources[s.logicalId(rotation.role)].Properties!;
        assert.equal(role.ManagedPolicyArns, undefined);
        assert.deepEqual(role.AssumeRolePolicyDocument.Statement, [
          { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' } },
        ]);
      }
    }
  });
});

describe('web app instance role', () => {
  const expected = (s: Synthesised): Statement[] => [
    {
      // The app secret only: the owner's (DDL) login is the migration instance's.
      Sid: 'ReadTheAppSecret',
      Effect: 'Allow',
      Action: ['secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue'],
      Resource: s.ref(s.stack.database.appSecret.secretArn),
    },
    {
      Sid: 'PullTheAppImage',
      Effect: 'Allow',
      Action: ['ecr:BatchCheckLayerAvailability', 'ecr:BatchGetImage', 'ecr:GetDownloadUrlForLayer'],
      // The stack's own repository: not the bootstrap's shared container-assets one.
      Resource: { 'Fn::GetAtt': [s.logicalId(s.stack.image.repository), 'Arn'] },
    },
    { Sid: 'LogInToEcr', Effect: 'Allow', Action: 'ecr:GetAuthorizationToken', Resource: '*' },
    {
      Sid: 'SessionManager',
      Effect: 'Allow',
      Action: [
        'ssm:UpdateInstanceInformation',
        'ssmmessages:CreateControlChannel',
        'ssmmessages:CreateDataChannel',
        'ssmmessages:OpenControlChannel',
        'ssmmessages:OpenDataChannel',
      ],
      Resource: '*',
    },
    {
      Sid: 'WriteTheAppLog',
      Effect: 'Allow',
      Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
      Resource: s.ref(s.stack.webApp.logGroup.logGroupArn),
    },
  ];
  // Added by the Auto Scaling group for its creation and update signals (a DefaultPolicy, no Sid).
  const signal: Statement = { Effect: 'Allow', Action: 'cloudformation:SignalResource', Resource: { Ref: 'AWS::StackId' } };

  it('reads the app secret (not the owner secret), pulls from its own repository, Session Manager, its log, its boot signal: nothing else', () => {
    for (const context of [DEFAULTS, ARM_ONE_INSTANCE]) {
      const s = synth(context);
      const roleId = s.logicalId(s.stack.webApp.role);
      assert.deepEqual(statementsOfRole(s.json, roleId), [...expected(s), signal]);
      const role = s.json.Resources[roleId].Properties!;
      assert.equal(role.ManagedPolicyArns, undefined, 'no managed policy (AmazonSSMManagedInstanceCore grants ssm:GetParameter on "*")');
      assert.deepEqual(role.AssumeRolePolicyDocument.Statement, [
        { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'ec2.amazonaws.com' } },
      ]);
      const all = JSON.stringify(statementsOfRole(s.json, roleId));
      for (const forbidden of ['ssm:GetParameter', 'ec2messages:', 'container-assets', 'ssm:SendCommand']) {
        assert.ok(!all.includes(forbidden), `instance role grants ${forbidden}`);
      }
    }
  });

  it('with a customer-managed key: adds kms:Decrypt through Secrets Manager only', () => {
    const s = synth(SINGLE_USER_CMK);
    assert.deepEqual(statementsOfRole(s.json, s.logicalId(s.stack.webApp.role)), [
      ...expected(s),
      {
        Sid: 'DecryptTheSecretsThroughSecretsManager',
        Effect: 'Allow',
        Action: 'kms:Decrypt',
        Resource: s.ref(s.stack.key!.keyArn),
        Condition: { StringEquals: { 'kms:ViaService': 'secretsmanager.eu-west-1.amazonaws.com' } },
      },
      signal,
    ]);
  });
});

describe('database provisioner role', () => {
  for (const [name, context] of Object.entries({ DEFAULTS, SINGLE_USER_CMK })) {
    it(`${name}: reads the three secrets (nothing written), its VPC attachment and its own log`, () => {
      const s = synth(context);
      const p = s.stack.provisioner;
      const db = s.stack.database;
      const expected: Statement[] = [
        {
          Sid: 'ReadTheThreeSecrets',
          Effect: 'Allow',
          Action: 'secretsmanager:GetSecretValue',
          Resource: [db.masterSecretAttachment, db.appSecretAttachment, db.ownerSecretAttachment]
            .map((a) => s.ref(a.secretArn))
            .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
        },
        { Sid: 'AttachToTheVpc', Effect: 'Allow', Action: VPC_ACTIONS, Resource: '*' },
        { Sid: 'WriteItsOwnLogs', Effect: 'Allow', Action: ['logs:CreateLogStream', 'logs:PutLogEvents'], Resource: s.ref(p.logGroup.logGroupArn) },
      ];
      if (s.stack.key) {
        expected.push({
          Sid: 'UseTheKeyThroughSecretsManager',
          Effect: 'Allow',
          Action: 'kms:Decrypt',
          Resource: s.ref(s.stack.key.keyArn),
          Condition: { StringEquals: { 'kms:ViaService': 'secretsmanager.eu-west-1.amazonaws.com' } },
        });
      }
      assert.deepEqual(statementsOfRole(s.json, s.logicalId(p.role)), expected);
    });
  }

  it("the custom resource framework's role: its log, and looking up and invoking the provisioner", () => {
    const s = synth(DEFAULTS);
    const p = s.stack.provisioner;
    const fn = s.logicalId(p.function);
    assert.deepEqual(statementsOfRole(s.json, s.logicalId(p.frameworkRole)), frameworkStatements(s, p.frameworkLogGroup, fn));
    assert.equal(s.json.Resources[s.logicalId(p.frameworkRole)].Properties!.ManagedPolicyArns, undefined);
  });
});

describe("the app secret's pre-flight", () => {
  for (const [name, context] of Object.entries({ DEFAULTS, SINGLE_USER_CMK })) {
    it(`${name}: the custom resource framework's role writes its log and may look up and invoke the app rotation function only`, () => {
      const s = synth(context);
      const p = s.stack.preflight;
      const fn = s.logicalId(s.stack.appRotation.function);
      assert.deepEqual(statementsOfRole(s.json, s.logicalId(p.frameworkRole)), frameworkStatements(s, p.frameworkLogGroup, fn));
      const role = s.json.Resources[s.logicalId(p.frameworkRole)].Properties!;
      assert.equal(role.ManagedPolicyArns, undefined);
      assert.deepEqual(role.AssumeRolePolicyDocument.Statement, [
        { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' } },
      ]);
    });
  }

  it('adds nothing to the rotation function\'s own role: the pre-flight uses what a rotation may do', () => {
    // The app rotation role's complete statements are asserted above ("rotation function role");
    // here: no policy resource attached to it by the pre-flight's grants.
    const s = synth(DEFAULTS);
    const attached = resourcesOfType(s.json, 'AWS::IAM::Policy').filter(([, p]) =>
      JSON.stringify(p.Roles).includes(s.logicalId(s.stack.appRotation.role)),
    );
    assert.deepEqual(attached, []);
  });
});

describe('deletion protection guard role', () => {
  it('may modify this database instance only, and write its log', () => {
    const s = synth(DEFAULTS);
    const guard = s.stack.deletionProtection!;
    assert.deepEqual(statementsOfRole(s.json, s.logicalId(guard.role)), [
      {
        Sid: 'ProtectTheDatabase',
        Effect: 'Allow',
        Action: 'rds:ModifyDBInstance',
        // The generated identifier (a fixed one would block replacing updates).
        Resource: { 'Fn::Join': ['', ['arn:aws:rds:eu-west-1:123456789012:db:', { Ref: s.logicalId(s.stack.database.instance) }]] },
      },
      {
        Sid: 'WriteItsOwnLogs',
        Effect: 'Allow',
        Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        Resource: { 'Fn::GetAtt': [s.json.Resources ? findLogGroup(s, 'DatabaseDeletionProtection') : '', 'Arn'] },
      },
    ]);
  });
});

describe('schema migration instance role', () => {
  it('reads the owner secret only, pulls the image, writes the app log, signals this stack', () => {
    for (const context of [DEFAULTS, SINGLE_USER_CMK]) {
      const s = synth(context);
      const statements = statementsOfRole(s.json, s.logicalId(s.stack.migration.role));
      assert.deepEqual(
        statements.map((st) => st.Sid),
        [
          'ReadTheOwnerSecret',
          'PullTheAppImage',
          'LogInToEcr',
          'WriteTheAppLog',
          'SignalThisStack',
          ...(context === SINGLE_USER_CMK ? ['DecryptTheSecretThroughSecretsManager'] : []),
        ],
      );
      assert.deepEqual(statements[0].Resource, s.ref(s.stack.database.ownerSecret.secretArn));
      assert.deepEqual(statements[4].Resource, { Ref: 'AWS::StackId' });
      const all = JSON.stringify(statements);
      assert.ok(!all.includes(s.logicalId(s.stack.database.appSecret)), 'no app secret');
      assert.ok(!all.includes('ssm'), 'no Session Manager on a one-shot instance');
    }
  });
});

describe('image copy role (cdk-ecr-deployment)', () => {
  it("reads the bootstrap's repository, pushes to the stack's own, writes its log: none of the construct's own wildcards", () => {
    const s = synth(DEFAULTS);
    const statements = statementsOfRole(s.json, s.logicalId(s.stack.image.copyRole));
    assert.deepEqual(
      statements.map((st) => st.Sid),
      ['LogInToEcr', 'ReadTheBootstrapImage', 'WriteItsOwnLogs', 'PushToTheStacksRepository'],
    );
    assert.deepEqual(statements[1].Resource, 'arn:aws:ecr:eu-west-1:123456789012:repository/cdk-hnb659fds-container-assets-123456789012-eu-west-1');
    assert.deepEqual(statements[3].Resource, { 'Fn::GetAtt': [s.logicalId(s.stack.image.repository), 'Arn'] });
    for (const st of statements) {
      if (st.Sid !== 'LogInToEcr') assert.notEqual(st.Resource, '*', `${st.Sid} on "*"`);
      assert.ok(!actionsOf(st).some((a) => a.startsWith('s3:')), 'no s3:GetObject on "*" (the construct adds it to a role it may change)');
    }
  });
});

describe('customer-managed key policy', () => {
  it('lets EC2 use the key for volumes on behalf of Auto Scaling, through EC2 only, without naming a service-linked role', () => {
    const s = synth(SINGLE_USER_CMK);
    const [, key] = resourcesOfType(s.json, 'AWS::KMS::Key')[0];
    const statements = key.KeyPolicy.Statement as Statement[];
    const bySid = (sid: string) => statements.find((st) => st.Sid === sid);
    const viaEc2 = { 'kms:CallerAccount': '123456789012', 'kms:ViaService': 'ec2.eu-west-1.amazonaws.com' };
    assert.deepEqual(bySid('EbsVolumesThroughEc2'), {
      Sid: 'EbsVolumesThroughEc2',
      Effect: 'Allow',
      Principal: { AWS: '*' },
      Action: ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey*', 'kms:ReEncrypt*'],
      Resource: '*',
      Condition: { StringEquals: viaEc2 },
    });
    assert.deepEqual(bySid('EbsVolumeGrantsThroughEc2'), {
      Sid: 'EbsVolumeGrantsThroughEc2',
      Effect: 'Allow',
      Principal: { AWS: '*' },
      Action: 'kms:CreateGrant',
      Resource: '*',
      Condition: { StringEquals: viaEc2, Bool: { 'kms:GrantIsForAWSResource': 'true' } },
    });
    assert.ok(!JSON.stringify(statements).includes('AWSServiceRoleForAutoScaling'), 'no service-linked role named');
    // The root volumes use this key (what makes the statements necessary).
    const [, lt] = resourcesOfType(s.json, 'AWS::EC2::LaunchTemplate')[0];
    assert.ok(JSON.stringify(lt.LaunchTemplateData.BlockDeviceMappings).includes('KmsKeyId'));
  });
});

function findLogGroup(s: Synthesised, under: string): string {
  const ids = Object.entries(s.json.Resources)
    .filter(([id, r]) => r.Type === 'AWS::Logs::LogGroup' && id.startsWith(under))
    .map(([id]) => id);
  assert.equal(ids.length, 1, `one log group under ${under}`);
  return ids[0];
}

describe('every role in the template', () => {
  for (const [name, context] of Object.entries({ DEFAULTS, SINGLE_USER_CMK, ARM_ONE_INSTANCE })) {
    it(`${name}: no GetRandomPassword, no wildcard action, no secretsmanager action on "*"`, () => {
      const s = synth(context);
      const roles = resourcesOfType(s.json, 'AWS::IAM::Role');
      assert.ok(roles.length >= 3, `only ${roles.length} roles`);
      for (const [id] of roles) {
        for (const statement of statementsOfRole(s.json, id)) {
          for (const action of actionsOf(statement)) {
            assert.notEqual(action, 'secretsmanager:GetRandomPassword', `${id} may call GetRandomPassword`);
            assert.ok(!action.includes('*'), `${id} has a wildcard action ${action}`);
            if (action.startsWith('secretsmanager:')) {
              assert.notEqual(JSON.stringify(statement.Resource), '"*"', `${id}: ${action} on "*"`);
              assert.ok(!JSON.stringify(statement.Resource).includes('*'), `${id}: ${action} on a wildcard resource`);
            }
          }
        }
      }
    });
  }
});

describe('Secrets Manager invoking the rotation function', () => {
  for (const [name, context] of Object.entries({ DEFAULTS, SINGLE_USER_CMK })) {
    it(`${name}: each permission carries aws:SourceAccount and the rotated secret as source`, () => {
      const s = synth(context);
      const rotations = [
        { rotation: s.stack.appRotation, secret: s.stack.database.appSecret },
        { rotation: s.stack.ownerRotation, secret: s.stack.database.ownerSecret },
        ...(s.stack.masterRotation ? [{ rotation: s.stack.masterRotation, secret: s.stack.database.masterSecret }] : []),
      ];
      const permissions = resourcesOfType(s.json, 'AWS::Lambda::Permission');
      assert.equal(permissions.length, rotations.length, 'one invoke permission per rotation function, no other');
      for (const { rotation, secret } of rotations) {
        const fn = s.ref(rotation.function.functionArn);
        const mine = permissions.filter(([, p]) => JSON.stringify(p.FunctionName) === JSON.stringify(fn));
        assert.equal(mine.length, 1);
        assert.deepEqual(mine[0][1], {
          Action: 'lambda:InvokeFunction',
          FunctionName: fn,
          Principal: 'secretsmanager.amazonaws.com',
          SourceAccount: '123456789012',
          SourceArn: s.ref(secret.secretArn),
        });
      }
    });
  }
});

/**
 * Everything a custom resource framework's role (lib/provider-framework.ts) may do: write its own
 * log, and look up and invoke the one function `fn` (logical id) in front of which it stands.
 */
function frameworkStatements(s: Synthesised, logGroup: logs.ILogGroup, fn: string): Statement[] {
  return [
    { Sid: 'WriteItsOwnLogs', Effect: 'Allow', Action: ['logs:CreateLogStream', 'logs:PutLogEvents'], Resource: s.ref(logGroup.logGroupArn) },
    {
      Effect: 'Allow',
      Action: 'lambda:InvokeFunction',
      Resource: [{ 'Fn::GetAtt': [fn, 'Arn'] }, { 'Fn::Join': ['', [{ 'Fn::GetAtt': [fn, 'Arn'] }, ':*']] }],
    },
    // The framework checks the function's state before invoking it.
    { Effect: 'Allow', Action: 'lambda:GetFunction', Resource: { 'Fn::GetAtt': [fn, 'Arn'] } },
  ];
}
