// What an operator can choose, with the defaults, and how `-c key=value`
// context values become typed settings. Context values from the command line
// arrive as strings ("false", "30"), so every key is parsed and validated here,
// once, and an invalid value stops synthesis with a message naming the key.

import * as path from 'node:path';

export type RotationStrategy = 'single-user' | 'alternating-users';
export type CpuArchitecture = 'arm64' | 'x86_64';
export type RotationCadence = 1 | 7 | 30;

export interface Settings {
  /** Directory holding the rotation function's `bootstrap` (cargo-lambda output). */
  readonly rotationFnAssetDir: string;
  readonly rotationFnArchitecture: CpuArchitecture;
  /** Build context of the web app image (the repository root, with its Dockerfile). */
  readonly webAppImageDir: string;
  readonly webAppArchitecture: CpuArchitecture;
  readonly rotationStrategy: RotationStrategy;
  /**
   * Rotation cadence in days: 1 (daily), 7 (weekly) or 30 (monthly, the first
   * week of the month). lib/schedules.ts turns it into staggered cron schedules
   * with a window, one per secret.
   */
  readonly rotationDays: RotationCadence;
  /** Also rotate the master user's secret (single-user, by its own function). */
  readonly rotateMasterSecret: boolean;
  /** One customer-managed KMS key for secrets, database, volume, logs and topic. */
  readonly customerManagedKey: boolean;
  readonly deletionProtection: boolean;
  /** Web app instances behind the load balancer (the Auto Scaling group's size). */
  readonly fleetSize: number;
  readonly multiAz: boolean;
  /**
   * PostgreSQL engine version: a major version (17, the default: RDS picks its
   * default minor and upgrades minors automatically) or a full one (17.9) to pin.
   */
  readonly postgresVersion: string;
  readonly dbInstanceType: string;
  readonly appInstanceType: string;
  readonly vpcCidr: string;
  /** CIDR allowed to reach the app port; defaults to the VPC's own CIDR. */
  readonly appIngressCidr: string;
  /** E-mail address subscribed to rotation failure alerts (none when empty). */
  readonly alertEmail?: string;
  readonly logRetentionDays: number;
  /** An internal Application Load Balancer in front of the fleet (opt-out: reach instances by port forward). */
  readonly loadBalancer: boolean;
  /** Zones the interface endpoints have network interfaces in (1: cheaper, the zone's outage cuts AWS API access). */
  readonly endpointZones: 1 | 2;
  /** Session Manager: its two endpoints and the instance role's agent permissions (opt-out saves two endpoints). */
  readonly sessionManager: boolean;
  readonly passwordLength: number;
  readonly excludeCharacters: string;
  /** Lookups CDK performs at deploy time; pass them to synthesise offline. */
  readonly availabilityZones?: string[];
  readonly s3PrefixListId?: string;
}

export const APP_PORT = 8080;
/** The web app's admin listener (metrics, whoami): published to each instance's loopback only. */
export const ADMIN_PORT = 9090;
/** The load balancer's HTTP listener, the port clients in appIngressCidr use. */
export const LISTENER_PORT = 80;
export const DB_PORT = 5432;
export const APP_USERNAME = 'app';
/** Owns the schema: `web-app migrate` logs in as this role (lib/provisioner.ts creates it). */
export const OWNER_USERNAME = 'app_owner';
export const MASTER_USERNAME = 'postgres';
export const DATABASE_NAME = 'app';
export const DEFAULT_EXCLUDE_CHARACTERS = '/@"\'\\';

const CDK_DIR = path.resolve(__dirname, '..');

export function defaultSettings(): Settings {
  return {
    rotationFnAssetDir: path.resolve(CDK_DIR, '../target/lambda/bootstrap'),
    // What tests/scripts/ship-check.sh builds and rotates with on the CI machine
    // (x86-64, no aarch64 standard library); arm64 is one setting away.
    rotationFnArchitecture: 'x86_64',
    webAppImageDir: path.resolve(CDK_DIR, '..'),
    webAppArchitecture: 'x86_64',
    rotationStrategy: 'alternating-users',
    rotationDays: 30,
    rotateMasterSecret: true,
    customerManagedKey: false,
    deletionProtection: true,
    fleetSize: 2,
    multiAz: false,
    postgresVersion: '17',
    dbInstanceType: 't4g.micro',
    appInstanceType: 't3.micro',
    vpcCidr: '10.20.0.0/16',
    appIngressCidr: '10.20.0.0/16',
    logRetentionDays: 365,
    loadBalancer: true,
    endpointZones: 2,
    sessionManager: true,
    passwordLength: 32,
    excludeCharacters: DEFAULT_EXCLUDE_CHARACTERS,
  };
}

type Lookup = (key: string) => unknown;

/** Builds settings from CDK context (`cdk.json` or `-c key=value`). */
export function settingsFromContext(get: Lookup): Settings {
  const d = defaultSettings();
  const str = (key: string): string | undefined => {
    const v = get(key);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
      throw new Error(`context ${key}: expected a string, number or boolean`);
    }
    return String(v);
  };
  const bool = (key: string, dflt: boolean): boolean => {
    const v = str(key);
    if (v === undefined) return dflt;
    if (v === 'true') return true;
    if (v === 'false') return false;
    throw new Error(`context ${key}: expected true or false, got ${JSON.stringify(v)}`);
  };
  const int = (key: string, dflt: number, min: number, max: number): number => {
    const v = str(key);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new Error(`context ${key}: expected an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    }
    return n;
  };
  const oneOf = <T extends string>(key: string, dflt: T, allowed: readonly T[]): T => {
    const v = str(key);
    if (v === undefined) return dflt;
    if (!(allowed as readonly string[]).includes(v)) {
      throw new Error(`context ${key}: expected one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
    }
    return v as T;
  };
  const dir = (key: string, dflt: string): string => {
    const v = str(key);
    return v === undefined ? dflt : path.resolve(CDK_DIR, v);
  };
  const list = (key: string): string[] | undefined => {
    const v = str(key);
    return v === undefined ? undefined : v.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  };

  for (const [key, why] of Object.entries(REMOVED_KEYS)) {
    if (get(key) !== undefined) throw new Error(`context ${key}: no longer a setting: ${why}`);
  }

  const webAppArchitecture = oneOf<CpuArchitecture>('webAppArchitecture', d.webAppArchitecture, ['arm64', 'x86_64']);
  const vpcCidr = cidr('vpcCidr', str('vpcCidr') ?? d.vpcCidr);
  const settings: Settings = {
    rotationFnAssetDir: dir('rotationFnAssetDir', d.rotationFnAssetDir),
    rotationFnArchitecture: oneOf<CpuArchitecture>('rotationFnArchitecture', d.rotationFnArchitecture, ['arm64', 'x86_64']),
    webAppImageDir: dir('webAppImageDir', d.webAppImageDir),
    webAppArchitecture,
    rotationStrategy: oneOf<RotationStrategy>('rotationStrategy', d.rotationStrategy, ['single-user', 'alternating-users']),
    rotationDays: cadence(str('rotationDays')) ?? d.rotationDays,
    rotateMasterSecret: bool('rotateMasterSecret', d.rotateMasterSecret),
    customerManagedKey: bool('customerManagedKey', d.customerManagedKey),
    deletionProtection: bool('deletionProtection', d.deletionProtection),
    fleetSize: int('fleetSize', d.fleetSize, 1, 10),
    multiAz: bool('multiAz', d.multiAz),
    postgresVersion: pgVersion(str('postgresVersion') ?? d.postgresVersion),
    dbInstanceType: str('dbInstanceType') ?? d.dbInstanceType,
    appInstanceType: str('appInstanceType') ?? (webAppArchitecture === 'arm64' ? 't4g.micro' : d.appInstanceType),
    vpcCidr,
    appIngressCidr: cidr('appIngressCidr', str('appIngressCidr') ?? vpcCidr),
    alertEmail: emailOrNone(str('alertEmail')),
    logRetentionDays: int('logRetentionDays', d.logRetentionDays, 1, 3653),
    loadBalancer: bool('loadBalancer', d.loadBalancer),
    endpointZones: int('endpointZones', d.endpointZones, 1, 2) as 1 | 2,
    sessionManager: bool('sessionManager', d.sessionManager),
    passwordLength: int('passwordLength', d.passwordLength, 16, 128),
    excludeCharacters: str('excludeCharacters') ?? d.excludeCharacters,
    availabilityZones: list('availabilityZones'),
    s3PrefixListId: str('s3PrefixListId'),
  };
  return settings;
}

/** Keys earlier versions accepted; naming them now stops synthesis rather than being silently ignored. */
const REMOVED_KEYS: Record<string, string> = {
  scanImagesOnPush:
    "the image now lives in the stack's own ECR repository, which scans on push; the account's registry " +
    'scanning configuration is no longer touched (remove the -c flag)',
};

function cidr(key: string, v: string): string {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(v);
  if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) > 32) {
    throw new Error(`context ${key}: expected an IPv4 CIDR such as 203.0.113.7/32, got ${JSON.stringify(v)}`);
  }
  return v;
}

function pgVersion(v: string): string {
  if (!/^\d{2}(\.\d+)?$/.test(v)) {
    throw new Error(`context postgresVersion: expected a major version such as 17 or a full one such as 17.9, got ${JSON.stringify(v)}`);
  }
  return v;
}

function cadence(v: string | undefined): RotationCadence | undefined {
  if (v === undefined) return undefined;
  if (v === '1' || v === '7' || v === '30') return Number(v) as RotationCadence;
  throw new Error(
    `context rotationDays: expected 1 (daily), 7 (weekly) or 30 (monthly), got ${JSON.stringify(v)}: ` +
      'the schedules are staggered cron expressions with a window (lib/schedules.ts)',
  );
}

function emailOrNone(v: string | undefined): string | undefined {
  if (v === undefined || v === '') return undefined;
  if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(v)) {
    throw new Error(`context alertEmail: expected an e-mail address, got ${JSON.stringify(v)}`);
  }
  return v;
}
