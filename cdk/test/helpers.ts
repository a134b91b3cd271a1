// Shared by the tests: synthesise a configuration once (cdk-nag runs as part
// of it), then look at the template through aws-cdk-lib/assertions.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import type { PgRotationStack } from '../lib/stack';
import { synthesise } from '../scripts/offline';

export interface Synthesised {
  readonly stack: PgRotationStack;
  readonly template: Template;
  readonly json: CfnTemplate;
  /** `{ Ref: logicalId }` or whatever the token resolves to in the template. */
  readonly ref: (value: unknown) => unknown;
  readonly logicalId: (construct: IConstruct) => string;
}

export interface CfnTemplate {
  Resources: Record<string, { Type: string; Properties?: Record<string, any>; DependsOn?: string[] }>;
  [key: string]: unknown;
}

const cache = new Map<string, Synthesised>();

/** Synthesises the app with `context` (as `-c key=value` would) and returns its only stack. */
export function synth(context: Record<string, unknown> = {}): Synthesised {
  const key = JSON.stringify(context);
  const hit = cache.get(key);
  if (hit) return hit;
  const { stack, outdir } = synthesise(context);
  const read = (artifactId: string) =>
    JSON.parse(fs.readFileSync(path.join(outdir, `${artifactId}.template.json`), 'utf8')) as CfnTemplate;
  const json = read(stack.artifactId);
  const result: Synthesised = {
    stack,
    template: Template.fromJSON(json),
    json,
    ref: (value) => stack.resolve(value),
    logicalId: (construct) => {
      const child = (construct.node.defaultChild ?? construct) as IConstruct;
      return stack.resolve((child as unknown as { logicalId: string }).logicalId) as string;
    },
  };
  cache.set(key, result);
  return result;
}

export function resourcesOfType(json: CfnTemplate, type: string): [string, Record<string, any>][] {
  return Object.entries(json.Resources)
    .filter(([, r]) => r.Type === type)
    .map(([id, r]) => [id, r.Properties ?? {}]);
}

/** Ref and Fn::GetAtt targets anywhere in a value. */
export function refsOf(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(refsOf);
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    if (typeof o.Ref === 'string') return [o.Ref];
    if (Array.isArray(o['Fn::GetAtt'])) return [o['Fn::GetAtt'][0] as string];
    return Object.values(o).flatMap(refsOf);
  }
  return [];
}

/** Everything resource `id` waits for, directly or through what those wait for (DependsOn, Ref, Fn::GetAtt). */
export function waitsFor(json: CfnTemplate, id: string): Set<string> {
  const seen = new Set<string>();
  const visit = (r: string) => {
    const resource = json.Resources[r];
    if (!resource) return; // a parameter or pseudo parameter
    for (const dep of [...(resource.DependsOn ?? []), ...refsOf(resource.Properties)]) {
      if (seen.has(dep)) continue;
      seen.add(dep);
      visit(dep);
    }
  };
  visit(id);
  return seen;
}

export interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: unknown;
}

/** Every statement that grants anything to the role: inline policies, and AWS::IAM::Policy resources attached to it. */
export function statementsOfRole(json: CfnTemplate, roleLogicalId: string): Statement[] {
  const role = json.Resources[roleLogicalId];
  if (!role || role.Type !== 'AWS::IAM::Role') throw new Error(`${roleLogicalId} is not a role`);
  const inline = ((role.Properties?.Policies ?? []) as { PolicyDocument: { Statement: Statement[] } }[]).flatMap(
    (p) => p.PolicyDocument.Statement,
  );
  const attached = resourcesOfType(json, 'AWS::IAM::Policy')
    .filter(([, p]) => (p.Roles as unknown[]).some((r) => JSON.stringify(r) === JSON.stringify({ Ref: roleLogicalId })))
    .flatMap(([, p]) => p.PolicyDocument.Statement as Statement[]);
  return [...inline, ...attached];
}

export function actionsOf(s: Statement): string[] {
  return Array.isArray(s.Action) ? s.Action : [s.Action];
}
