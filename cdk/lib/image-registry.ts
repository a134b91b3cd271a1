// The web app's image: built and published by `cdk deploy` to the CDK
// bootstrap's container-assets repository, then copied during the deployment
// into this stack's own ECR repository, which is the only one the instances
// may pull from.
//
// Why this shape. The pinned CLI builds (and, for an image, looks up the
// destination repository of) every asset before it deploys any stack
// (`--asset-prebuild`, on by default). A repository created by a stack of the
// same `cdk deploy` therefore does not exist yet when the CLI looks for it, and
// the first `cdk deploy --all` in an empty account failed ("No ECR repository
// named …"). The bootstrap's repository exists before any deployment, so
// publishing there works whatever order the CLI picks; the copy into the
// stack's own repository is a resource of the stack (cdk-ecr-deployment, a
// custom resource) that the fleet waits for. Nothing depends on the CLI's
// scheduling, and the app is one stack again.
//
// What stays true: the instances never read the bootstrap's shared repository
// (it holds every CDK image of the account); scan on push is a property of this
// repository; and only the copy function may push to it (repository policy).

import { RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import type * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { DockerImageName, ECRDeployment } from 'cdk-ecr-deployment';
import { Construct } from 'constructs';
import { functionLogGroup } from './rotation';

/** Images kept; older ones expire. A rollback needs the previous image, so a generous number. */
export const IMAGES_KEPT = 30;

/** What pushing an image takes; denied to every principal but the copy function (repository policy). */
export const PUSH_ACTIONS = [
  'ecr:InitiateLayerUpload',
  'ecr:UploadLayerPart',
  'ecr:CompleteLayerUpload',
  'ecr:PutImage',
];

/** What reading an image takes (the copy reads the bootstrap's repository, and checks its own). */
const READ_ACTIONS = ['ecr:BatchCheckLayerAvailability', 'ecr:GetDownloadUrlForLayer', 'ecr:BatchGetImage', 'ecr:DescribeImages'];

export interface WebAppImageProps {
  /** The image as `cdk deploy` publishes it (to the bootstrap's repository). */
  readonly asset: ecrAssets.DockerImageAsset;
  readonly architecture: 'arm64' | 'x86_64';
  readonly logRetentionDays: number;
  readonly encryptionKey?: kms.IKey;
}

export class WebAppImage extends Construct {
  readonly repository: ecr.Repository;
  /** The image in this stack's repository (tag = the asset's content hash): what instances pull. */
  readonly imageUri: string;
  readonly copy: ECRDeployment;
  readonly copyRole: iam.Role;
  readonly copyLogGroup: logs.LogGroup;
  /** The copy's Lambda function (cdk-ecr-deployment's handler, outside the VPC: it talks to ECR only). */
  readonly copyHandler: lambda.Function;

  constructor(scope: Construct, id: string, props: WebAppImageProps) {
    super(scope, id);
    const stack = Stack.of(this);
    this.repository = new ecr.Repository(this, 'Repository', {
      // No repositoryName: a generated name never blocks a replacement or a
      // second deployment of the app in the same account.
      imageScanOnPush: true,
      // Mutable on purpose: tags are content hashes, and the copy is repeated
      // with the same tag and content when CloudFormation rolls an update back
      // (an immutable repository refuses even an identical re-push). Who may
      // push at all is pinned by the repository policy below.
      imageTagMutability: ecr.TagMutability.MUTABLE,
      removalPolicy: RemovalPolicy.DESTROY,
      emptyOnDelete: true,
      lifecycleRules: [{ description: `keep the newest ${IMAGES_KEPT} images`, maxImageCount: IMAGES_KEPT }],
    });
    this.imageUri = this.repository.repositoryUriForTag(props.asset.assetHash);

    this.copyLogGroup = functionLogGroup(this, 'CopyLogs', props.logRetentionDays, props.encryptionKey);
    const bootstrapRepositoryArn = stack.formatArn({ service: 'ecr', resource: 'repository', resourceName: props.asset.repository.repositoryName });
    this.copyRole = new iam.Role(this, 'CopyRole', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: "Copies the web app image from the CDK bootstrap's repository into the stack's own, at deployment",
      inlinePolicies: {
        Copy: new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({ sid: 'LogInToEcr', actions: ['ecr:GetAuthorizationToken'], resources: ['*'] }),
            new iam.PolicyStatement({ sid: 'ReadTheBootstrapImage', actions: READ_ACTIONS, resources: [bootstrapRepositoryArn] }),
            new iam.PolicyStatement({
              sid: 'WriteItsOwnLogs',
              actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
              resources: [this.copyLogGroup.logGroupArn],
            }),
          ],
        }),
      },
    });
    Validations.of(this.copyRole).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'Only ecr:GetAuthorizationToken uses "*" (it has no resource); reads name the bootstrap repository, pushes this stack\'s.',
    });
    // A policy of its own: the repository's policy names the role, so the
    // role itself must not name the repository (a cycle).
    const push = new iam.Policy(this, 'CopyPushPolicy', {
      roles: [this.copyRole],
      statements: [
        new iam.PolicyStatement({
          sid: 'PushToTheStacksRepository',
          actions: [...READ_ACTIONS, ...PUSH_ACTIONS],
          resources: [this.repository.repositoryArn],
        }),
      ],
    });
    // cdk-ecr-deployment adds its own broad statements (ecr:* actions and
    // s3:GetObject on "*") to the role it is given; an immutable view of the
    // role drops them, so the statements above are all the copy may do.
    this.copy = new ECRDeployment(this, 'Copy', {
      src: new DockerImageName(props.asset.imageUri),
      dest: new DockerImageName(this.imageUri),
      imageArch: [props.architecture === 'arm64' ? 'arm64' : 'amd64'],
      role: this.copyRole.withoutPolicyUpdates(),
      memoryLimit: 512,
    });
    this.copy.node.addDependency(push);
    // The copy's handler is a singleton at the stack's root; give it the log
    // group with retention (else Lambda creates one that never expires).
    const handler = (this.copy as unknown as { handler: { lambdaFunction: lambda.Function } }).handler.lambdaFunction;
    (handler.node.defaultChild as lambda.CfnFunction).loggingConfig = { logGroup: this.copyLogGroup.logGroupName, logFormat: 'Text' };
    handler.node.tryRemoveChild('LogGroup'); // the unused one CDK would create (its retention is not ours)
    this.copyHandler = handler;

    // Only the copy function pushes images. Everyone else, the account's administrators included,
    // is refused here (an explicit deny beats any identity policy).
    this.repository.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'OnlyTheCopyFunctionPushes',
        effect: iam.Effect.DENY,
        principals: [new iam.AnyPrincipal()],
        actions: PUSH_ACTIONS,
        conditions: { ArnNotEquals: { 'aws:PrincipalArn': this.copyRole.roleArn } },
      }),
    );
  }
}
