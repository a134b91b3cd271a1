// Least privilege, statement by statement, for both roles and both strategies.
// Each expected list is the complete set of statements the role holds: an
// extra grant anywhere (a managed policy, a DefaultPolicy added by a grant*
// call) fails the test.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULTS, SINGLE_USER_CMK } from './configurations';
import { actionsOf, resourcesOfType, statementsOfRole, synth, type Statement, type Synthesised } from './helpers';

const ROTATE_ACTIONS = [
  'secretsmanager:DescribeSecret',
  'secretsmanager:GetSecretValue',
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

function rotationStatements(s: Synthesised, which: 'app' | 'master'): Statement[] {
  const rotation = which === 'app' ? s.stack.appRotation : s.stack.masterRotation;
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

  it('single user with a customer-managed key: KMS through Secrets Manager only, no master secret', () => {
    const s = synth(SINGLE_USER_CMK);
    const { appRotation, database, key } = s.stack;
    assert.ok(key);
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
      for (const rotation of [s.stack.appRotation, s.stack.masterRotation].filter((r) => r !== undefined)) {
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
  const imageStatements = (s: Synthesised) => [
    {
      Sid: 'ReadTheAppSecret',
      Effect: 'Allow',
      Action: ['secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue'],
      Resource: s.ref(s.stack.database.appSecret.secretArn),
    },
    {
      Sid: 'PullTheAppImage',
      Effect: 'Allow',
      Action: ['ecr:BatchCheckLayerAvailability', 'ecr:BatchGetImage', 'ecr:GetDownloadUrlForLayer'],
      Resource: 'arn:aws:ecr:eu-west-1:123456789012:repository/cdk-hnb659fds-container-assets-123456789012-eu-west-1',
    },
    { Sid: 'LogInToEcr', Effect: 'Allow', Action: 'ecr:GetAuthorizationToken', Resource: '*' },
  ];

  it('reads the app secret only, pulls from its repository only, plus SSM core', () => {
    const s = synth(DEFAULTS);
    const roleId = s.logicalId(s.stack.webApp.role);
    assert.deepEqual(statementsOfRole(s.json, roleId), imageStatements(s));
    const role = s.json.Resources[roleId].Properties!;
    assert.deepEqual(role.ManagedPolicyArns, [
      { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':iam::aws:policy/AmazonSSMManagedInstanceCore']] },
    ]);
    assert.deepEqual(role.AssumeRolePolicyDocument.Statement, [
      { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'ec2.amazonaws.com' } },
    ]);
  });

  it('with a customer-managed key: adds kms:Decrypt through Secrets Manager only', () => {
    const s = synth(SINGLE_USER_CMK);
    assert.deepEqual(statementsOfRole(s.json, s.logicalId(s.stack.webApp.role)), [
      ...imageStatements(s),
      {
        Sid: 'DecryptTheSecretThroughSecretsManager',
        Effect: 'Allow',
        Action: 'kms:Decrypt',
        Resource: s.ref(s.stack.key!.keyArn),
        Condition: { StringEquals: { 'kms:ViaService': 'secretsmanager.eu-west-1.amazonaws.com' } },
      },
    ]);
  });
});

describe('every role in the template', () => {
  for (const [name, context] of Object.entries({ DEFAULTS, SINGLE_USER_CMK })) {
    it(`${name}: no GetRandomPassword, no wildcard action, no secretsmanager action on "*"`, () => {
      const s = synth(context);
      const roles = resourcesOfType(s.json, 'AWS::IAM::Role');
      assert.ok(roles.length >= 3);
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
