// The web app's image repository, in a small stack of its own that the main
// stack depends on.
//
// Why a second stack: `cdk deploy` builds the image and pushes it *before* it
// deploys the stack that uses it, so the repository cannot be created by that
// same stack. The main stack's synthesizer names this repository as its image
// destination (`imageAssetsRepositoryName`, lib/app.ts), and the CLI publishes
// a stack's assets only after the stacks it depends on are deployed. One
// `cdk deploy --all` therefore creates the repository, builds and pushes the
// image into it, then deploys the rest; nothing else (no CodeBuild, no copy
// Lambda, no npm package fetching binaries at install time) is involved.
//
// What that buys: the image is never in the CDK bootstrap's shared
// container-assets repository, so the instance role pulls from this repository
// only (not every CDK image of the account), and scan on push is a property of
// this repository instead of the account-wide registry scanning configuration.

import { DefaultStackSynthesizer, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { Construct } from 'constructs';

export interface ImageRegistryStackProps extends StackProps {
  readonly repositoryName: string;
  /** The CDK bootstrap qualifier: names the role `cdk deploy` pushes images with. */
  readonly bootstrapQualifier: string;
}

/** Images kept; older ones expire. A rollback needs the previous image, so a generous number. */
export const IMAGES_KEPT = 30;

/** What `cdk deploy` (cdk-assets) does with the repository: check, then push. */
export const PUSH_ACTIONS = [
  'ecr:DescribeRepositories',
  'ecr:DescribeImages',
  'ecr:BatchCheckLayerAvailability',
  'ecr:InitiateLayerUpload',
  'ecr:UploadLayerPart',
  'ecr:CompleteLayerUpload',
  'ecr:PutImage',
  'ecr:BatchGetImage',
  'ecr:GetDownloadUrlForLayer',
];

export class ImageRegistryStack extends Stack {
  readonly repository: ecr.Repository;
  readonly publishingRoleArn: string;

  constructor(scope: Construct, id: string, props: ImageRegistryStackProps) {
    super(scope, id, props);
    this.repository = new ecr.Repository(this, 'WebAppImages', {
      repositoryName: props.repositoryName,
      imageScanOnPush: true,
      // The tag is the build context's hash: a tag never moves to other content.
      imageTagMutability: ecr.TagMutability.IMMUTABLE,
      // A fixed name must not outlive the stack: a failed first deployment rolls
      // back to nothing, and `cdk destroy --all` removes the images with it.
      removalPolicy: RemovalPolicy.DESTROY,
      emptyOnDelete: true,
      lifecycleRules: [{ description: `keep the newest ${IMAGES_KEPT} images`, maxImageCount: IMAGES_KEPT }],
    });
    // The bootstrap's image-publishing role may push to the bootstrap's own
    // repository only; this repository's policy lets it push here too (same
    // account: a resource policy suffices). Nothing else is granted.
    this.publishingRoleArn = publishingRoleArn(this, props.bootstrapQualifier);
    this.repository.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CdkDeployPushesTheWebAppImage',
        principals: [new iam.ArnPrincipal(this.publishingRoleArn)],
        actions: PUSH_ACTIONS,
      }),
    );
  }
}

/** The bootstrap stack's image-publishing role (its name is fixed by the bootstrap template). */
export function publishingRoleArn(stack: Stack, qualifier: string): string {
  return DefaultStackSynthesizer.DEFAULT_IMAGE_ASSET_PUBLISHING_ROLE_ARN.replace('${Qualifier}', qualifier)
    .replace('${AWS::Partition}', stack.partition)
    .replace(/\$\{AWS::AccountId\}/g, stack.account)
    .replace('${AWS::Region}', stack.region);
}

/** ECR repository names: lower case; the stack name keeps two deployments in one account apart. */
export function imageRepositoryName(stackName: string): string {
  const base = stackName
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .replace(/-+/g, '-')
    .replace(/^-|-$/g, '');
  return `${base || 'pg-rotation'}/web-app`;
}
