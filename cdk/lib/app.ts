// Builds the CDK app from its context: used by bin/app.ts (the CLI's entry
// point), by scripts/synth.ts (offline synthesis in CI) and by the tests.
//
// Two stacks: the image registry (the web app's ECR repository) and the rest,
// which depends on it. `cdk deploy --all` deploys the registry, pushes the
// image into it, then deploys the main stack (lib/image-registry.ts says why).

import { App, DefaultStackSynthesizer, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { ImageRegistryStack, imageRepositoryName } from './image-registry';
import { settingsFromContext } from './settings';
import { PgRotationStack } from './stack';

export const STACK_ID = 'PgRotation';
export const REGISTRY_STACK_ID = 'PgRotationImages';

export interface Stacks {
  readonly stack: PgRotationStack;
  readonly registry: ImageRegistryStack;
}

export function addStacks(app: App, env: { account?: string; region?: string }): Stacks {
  const settings = settingsFromContext((key) => app.node.tryGetContext(key));
  const stackName = (app.node.tryGetContext('stackName') as string | undefined) ?? STACK_ID;
  const qualifier =
    (app.node.tryGetContext('@aws-cdk/core:bootstrapQualifier') as string | undefined) ?? DefaultStackSynthesizer.DEFAULT_QUALIFIER;
  const repositoryName = imageRepositoryName(stackName);
  const registry = new ImageRegistryStack(app, REGISTRY_STACK_ID, {
    stackName: `${stackName}-images`,
    env,
    description: 'ECR repository of the web app image (scan on push, immutable tags) for the PostgreSQL rotation stack',
    repositoryName,
    bootstrapQualifier: qualifier,
  });
  const stack = new PgRotationStack(app, STACK_ID, {
    stackName,
    env,
    description: 'PostgreSQL on RDS with Secrets Manager rotation (Rust Lambda) and a web app fleet behind a load balancer',
    settings,
    imageRepositoryName: repositoryName,
    // The image goes to the registry stack's repository, not the bootstrap's.
    synthesizer: new DefaultStackSynthesizer({ qualifier, imageAssetsRepositoryName: repositoryName }),
  });
  stack.addDependency(registry, 'cdk deploy pushes the web app image into its repository before deploying the stack');
  // cdk-nag's AWS Solutions rules run at every synthesis; an unacknowledged
  // finding stops it. Acknowledgements live beside the construct they excuse.
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { stack, registry };
}
