// The database logins the stack needs, created by the stack itself: no manual
// SQL between `cdk deploy` and the first rotation.
//
// A CloudFormation custom resource (`Custom::DatabaseLogins`) through CDK's
// `custom_resources.Provider` framework. Its onEvent handler is the rotation
// function's own `bootstrap` with handler `provision` (contracts.md): in the
// VPC, in the rotation functions' security group, verified TLS against the RDS
// roots. Logged in as the master user (AWSCURRENT of the master secret) into
// the app database, it creates, idempotently:
//   - the owner role (owner secret's username), password set as a SCRAM
//     verifier of the owner secret's AWSCURRENT, CONNECT, USAGE + CREATE on
//     schema public: it owns the schema (`web-app migrate`);
//   - the app role (app secret's username), password a SCRAM verifier of the
//     app secret's AWSCURRENT when the role is new (rotations own it after),
//     CONNECT, USAGE on public, and default privileges from the owner: DML on
//     tables, USAGE/SELECT on sequences. Nothing more.
// Delete does nothing: roles and data outlive the resource.
//
// The rotation schedules depend on this resource (lib/stack.ts): Secrets
// Manager tests a new schedule by running testSecret at deployment, and that
// test needs the login to exist.

import { CustomResource, Duration, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { providerFramework } from './provider-framework';
import {
  type BootstrapFunctionProps,
  bootstrapFunction,
  functionLogGroup,
  secretsKeyStatement,
  VPC_ATTACH_ACKNOWLEDGEMENT,
  vpcFunctionStatements,
} from './rotation';
import { DATABASE_NAME } from './settings';

export interface DatabaseProvisionerProps extends BootstrapFunctionProps {
  /** The secrets as attached to the instance: host and port must be in them first. */
  readonly masterSecret: secretsmanager.ISecret;
  readonly appSecret: secretsmanager.ISecret;
  readonly ownerSecret: secretsmanager.ISecret;
  readonly logRetentionDays: number;
}

/** Seconds: a few statements, plus a first TLS login to a database that has just come up. */
export const PROVISIONER_TIMEOUT_SECONDS = 60;

export class DatabaseProvisioner extends Construct {
  readonly function: lambda.Function;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;
  /** The Provider framework's own function (outside the VPC) and its role. */
  readonly frameworkRole: iam.Role;
  readonly frameworkLogGroup: logs.LogGroup;
  readonly resource: CustomResource;

  constructor(scope: Construct, id: string, props: DatabaseProvisionerProps) {
    super(scope, id);
    const stack = Stack.of(this);

    this.logGroup = functionLogGroup(this, 'Logs', props.logRetentionDays, props.encryptionKey);
    const statements = [
      new iam.PolicyStatement({
        sid: 'ReadTheThreeSecrets',
        actions: ['secretsmanager:GetSecretValue'],
        resources: [props.masterSecret.secretArn, props.appSecret.secretArn, props.ownerSecret.secretArn],
      }),
      ...vpcFunctionStatements(this.logGroup),
    ];
    if (props.encryptionKey) statements.push(secretsKeyStatement(props.encryptionKey, stack.region, ['kms:Decrypt']));
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: 'Creates the app and owner database logins from their secrets',
      inlinePolicies: { Provision: new iam.PolicyDocument({ statements }) },
    });
    Validations.of(this.role).acknowledge({ id: 'AwsSolutions-IAM5[Resource::*]', reason: VPC_ATTACH_ACKNOWLEDGEMENT });

    this.function = bootstrapFunction(this, 'Function', {
      ...props,
      description: 'Creates the database logins of the app (CloudFormation custom resource)',
      // The same binary as the rotation functions; `_HANDLER=provision` selects the provisioner.
      handler: 'provision',
      timeout: Duration.seconds(PROVISIONER_TIMEOUT_SECONDS),
      role: this.role,
      logGroup: this.logGroup,
      // The provisioner acts only for this stack's secrets and database: an
      // invocation naming others (anyone who may invoke it) is refused.
      environment: {
        PROVISION_MASTER_SECRET_ARN: props.masterSecret.secretArn,
        PROVISION_APP_SECRET_ARN: props.appSecret.secretArn,
        PROVISION_OWNER_SECRET_ARN: props.ownerSecret.secretArn,
        PROVISION_DATABASE: DATABASE_NAME,
      },
    });

    // The Provider framework in front of it, outside the VPC, with a role that
    // may only invoke the provisioner and write its own log (lib/provider-framework.ts).
    const framework = providerFramework(this, {
      onEventHandler: this.function,
      handlerName: 'the provisioner',
      description: 'Custom resource framework of the database provisioner: invoke it, write its log',
      logRetentionDays: props.logRetentionDays,
      encryptionKey: props.encryptionKey,
    });
    this.frameworkRole = framework.role;
    this.frameworkLogGroup = framework.logGroup;

    this.resource = new CustomResource(this, 'Logins', {
      serviceToken: framework.provider.serviceToken,
      resourceType: 'Custom::DatabaseLogins',
      properties: {
        MasterSecretArn: props.masterSecret.secretArn,
        AppSecretArn: props.appSecret.secretArn,
        OwnerSecretArn: props.ownerSecret.secretArn,
      },
    });
  }
}
