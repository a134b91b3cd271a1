// A deployment rehearsal without an account: the pinned CDK CLI's own
// deployment orchestration (its WorkGraphBuilder, with `--asset-prebuild` on,
// as `cdk deploy --all` runs it; then WorkGraph.doParallel) over a synthesised
// cloud assembly, with AWS stubbed by a small model of an empty, bootstrapped
// account:
//
// - the bootstrap stack's file bucket and container-assets repository exist;
// - building a container image looks its destination repository up first and
//   fails when it does not exist, with the message cdk-assets gives ("No ECR
//   repository named ... Is this account bootstrapped?");
// - deploying a stack creates the ECR repositories its template names, and
//   takes time (CloudFormation: minutes; here a few milliseconds, still far
//   longer than the moment a build needs to look its repository up), so the
//   CLI's concurrency plays out as it does against AWS.
//
// What the rehearsal catches: anything that depends on the order in which the
// CLI builds, publishes and deploys (the first `cdk deploy --all` in an empty
// account failed on exactly that). What it cannot: service-side validation and
// runtime health (cdk/README.md, "Verify in a real account").
//
//   node --import tsx scripts/rehearse.ts ASSEMBLY_DIR [ASSEMBLY_DIR...]

import * as path from 'node:path';
import * as cxapi from 'aws-cdk-lib/cx-api';

// The CLI's bundle: its package exports only its binary, so load the file itself.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const cli = require(path.join(path.dirname(require.resolve('aws-cdk/package.json')), 'lib', 'index.js')) as {
  WorkGraphBuilder: new (ioHelper: unknown, prebuildAssets: boolean) => { build(artifacts: unknown[]): WorkGraph };
};

interface WorkGraph {
  doParallel(concurrency: Record<string, number>, actions: Record<string, (node: WorkNode) => Promise<void>>): Promise<void>;
}

interface WorkNode {
  id: string;
  type: 'stack' | 'asset-build' | 'asset-publish' | 'marker';
  stack?: cxapi.CloudFormationStackArtifact;
  parentStack?: cxapi.CloudFormationStackArtifact;
  asset?: { id: { assetId: string }; type: string; destination: { repositoryName?: string; bucketName?: string } };
}

export interface Rehearsal {
  /** What happened, in order: `build <asset>`, `publish <asset>`, `deploy <stack>`. */
  readonly steps: string[];
}

/** An empty account, bootstrapped with the default qualifier, as far as `cdk deploy` sees it. */
class StubAccount {
  readonly repositories = new Set<string>();
  readonly buckets = new Set<string>();
  readonly stacks = new Set<string>();

  constructor(account: string, region: string, qualifier = 'hnb659fds') {
    this.repositories.add(`cdk-${qualifier}-container-assets-${account}-${region}`);
    this.buckets.add(`cdk-${qualifier}-assets-${account}-${region}`);
  }

  /** CloudFormation creates the stack's repositories (their fixed names; generated ones nobody can have referred to). */
  deploy(stack: cxapi.CloudFormationStackArtifact): void {
    const resources = (stack.template as { Resources?: Record<string, { Type: string; Properties?: { RepositoryName?: unknown } }> }).Resources ?? {};
    for (const r of Object.values(resources)) {
      if (r.Type === 'AWS::ECR::Repository' && typeof r.Properties?.RepositoryName === 'string') this.repositories.add(r.Properties.RepositoryName);
    }
    this.stacks.add(stack.stackName);
  }
}

/** A stack deployment's duration in the rehearsal. */
const STACK_DEPLOY_MS = 50;

const quiet = new Proxy({}, { get: () => async () => undefined });
const ioHelper = { defaults: quiet, notify: async () => undefined, requestResponse: async () => undefined };

/** Runs the CLI's orchestration of `cdk deploy --all` over the assembly in `dir`. */
export async function rehearse(dir: string): Promise<Rehearsal> {
  const assembly = new cxapi.CloudAssembly(dir);
  const stacks = assembly.stacks;
  if (stacks.length === 0) throw new Error(`no stacks in ${dir}`);
  const env = stacks[0].environment;
  const account = new StubAccount(env.account, env.region);
  // As cdk-toolkit.ts's deploy(): the stacks and their asset manifests, prebuild on (the default).
  const artifacts = stacks.flatMap((s) => [s, ...s.dependencies.filter((d) => cxapi.AssetManifestArtifact.isAssetManifestArtifact(d))]);
  const graph = new cli.WorkGraphBuilder(ioHelper, true).build(artifacts);
  const steps: string[] = [];
  await graph.doParallel(
    { stack: 1, 'asset-build': 1, 'asset-publish': 8, marker: 1 },
    {
      buildAsset: async (node) => {
        const asset = node.asset!;
        const repository = asset.destination.repositoryName;
        // cdk-assets' container image build starts with DescribeRepositories on the destination.
        if (repository !== undefined && !account.repositories.has(repository)) {
          throw new Error(
            `${node.parentStack!.stackName}: building ${asset.id.assetId}: No ECR repository named '${repository}' in account ` +
              `${env.account}. Is this account bootstrapped?`,
          );
        }
        if (asset.destination.bucketName !== undefined && !account.buckets.has(asset.destination.bucketName)) {
          throw new Error(`${node.parentStack!.stackName}: no bucket ${asset.destination.bucketName}. Is this account bootstrapped?`);
        }
        steps.push(`build ${asset.id.assetId}`);
      },
      publishAsset: async (node) => {
        steps.push(`publish ${node.asset!.id.assetId}`);
      },
      deployStack: async (node) => {
        await new Promise((resolve) => setTimeout(resolve, STACK_DEPLOY_MS));
        account.deploy(node.stack!);
        steps.push(`deploy ${node.stack!.stackName}`);
      },
      marker: async () => undefined,
    },
  );
  return { steps };
}

async function main(): Promise<void> {
  const dirs = process.argv.slice(2);
  if (dirs.length === 0) throw new Error('usage: rehearse.ts ASSEMBLY_DIR [ASSEMBLY_DIR...]');
  let failed = false;
  for (const dir of dirs) {
    try {
      const { steps } = await rehearse(dir);
      const counts = ['build', 'publish', 'deploy'].map((k) => `${steps.filter((s) => s.startsWith(k)).length} ${k}`);
      console.log(`rehearsal ok: ${path.basename(dir)}: ${counts.join(', ')}`);
    } catch (err) {
      failed = true;
      console.error(`rehearsal FAILED: ${path.basename(dir)}: ${(err as Error).message}`);
    }
  }
  process.exit(failed ? 1 : 0);
}

if (require.main === module) {
  void main();
}
