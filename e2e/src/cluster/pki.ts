// Certificates, service-account keys and kubeconfigs for the local control plane, made with the
// openssl CLI (installed by .ci/run on CI machines that lack it).
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ClusterLayout } from './layout.ts';
import { statePaths } from './layout.ts';

const run = promisify(execFile);
const certificateValidityDays = 3650;

export interface Identity {
  /** Base file name under pki/. */
  file: string;
  commonName: string;
  organization?: string;
  dnsNames?: string[];
  ipAddresses?: string[];
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args, { timeout: 60_000 });
  } catch (error) {
    throw new Error(`BFT_ERR_PKI_OPENSSL: openssl ${args[0]} failed`, { cause: error });
  }
}

async function createCa(pki: string): Promise<void> {
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', join(pki, 'ca.key'), '-out', join(pki, 'ca.crt'), '-days', String(certificateValidityDays),
    '-subj', '/CN=bftkube-local-ca', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature']);
}

async function createLeaf(pki: string, identity: Identity): Promise<void> {
  const key = join(pki, `${identity.file}.key`);
  const csr = join(pki, `${identity.file}.csr`);
  const extensions = join(pki, `${identity.file}.ext`);
  const subject = `${identity.organization ? `/O=${identity.organization}` : ''}/CN=${identity.commonName}`;
  const alternativeNames = [
    ...(identity.dnsNames ?? []).map((name) => `DNS:${name}`),
    ...(identity.ipAddresses ?? []).map((ip) => `IP:${ip}`),
  ];
  writeFileSync(extensions, [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth,clientAuth',
    ...(alternativeNames.length > 0 ? [`subjectAltName=${alternativeNames.join(',')}`] : []),
  ].join('\n') + '\n');
  await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', csr, '-subj', subject]);
  await openssl(['x509', '-req', '-in', csr, '-CA', join(pki, 'ca.crt'), '-CAkey', join(pki, 'ca.key'),
    '-CAcreateserial', '-days', String(certificateValidityDays), '-out', join(pki, `${identity.file}.crt`),
    '-extfile', extensions]);
}

export function kubeconfigText(layout: ClusterLayout, pki: string, file: string, user: string): string {
  const base64 = (path: string) => readFileSync(path).toString('base64');
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: `bftkube-${layout.name}`, cluster: {
      server: `https://${layout.hostIp}:${layout.apiserverPort}`,
      'certificate-authority-data': base64(join(pki, 'ca.crt')),
    } }],
    users: [{ name: user, user: {
      'client-certificate-data': base64(join(pki, `${file}.crt`)),
      'client-key-data': base64(join(pki, `${file}.key`)),
    } }],
    contexts: [{ name: `bftkube-${layout.name}`, context: { cluster: `bftkube-${layout.name}`, user } }],
    'current-context': `bftkube-${layout.name}`,
  };
  // JSON is YAML: kubectl, helm and client libraries all read it.
  return JSON.stringify(config, null, 2) + '\n';
}

/** The first address of the service range: the apiserver's own `kubernetes` Service. */
export function kubernetesServiceIp(serviceCidr: string): string {
  const [network] = serviceCidr.split('/');
  const octets = (network ?? '').split('.').map(Number);
  if (octets.length !== 4) throw new Error(`BFT_ERR_LAYOUT_SERVICE_CIDR: ${serviceCidr} is not an IPv4 range`);
  octets[3] = (octets[3] ?? 0) + 1;
  return octets.join('.');
}

/** Creates everything once per state folder; a restart with kept state reuses it. */
export async function ensurePki(layout: ClusterLayout): Promise<void> {
  const paths = statePaths(layout);
  mkdirSync(paths.pki, { recursive: true });
  if (existsSync(join(paths.pki, 'complete'))) return;
  await createCa(paths.pki);
  const identities: Identity[] = [
    { file: 'apiserver', commonName: 'kube-apiserver', ipAddresses: [layout.hostIp, '127.0.0.1', kubernetesServiceIp(layout.serviceCidr)],
      dnsNames: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', `kubernetes.default.svc.${layout.clusterDomain}`] },
    { file: 'admin', commonName: 'bftkube-admin', organization: 'system:masters' },
    { file: 'controller-manager', commonName: 'system:kube-controller-manager', ipAddresses: [layout.hostIp] },
    { file: 'scheduler', commonName: 'system:kube-scheduler', ipAddresses: [layout.hostIp] },
    // The node agent also provisions PersistentVolumes and asks for service-account tokens of any
    // pod, which the Node authorizer would deny a kubelet identity: it runs as a cluster admin.
    { file: 'node', commonName: `system:node:${layout.nodeName}`, organization: 'system:masters', ipAddresses: [layout.hostIp] },
  ];
  for (const identity of identities) await createLeaf(paths.pki, identity);
  const serviceAccountKeys = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(join(paths.pki, 'sa.key'), serviceAccountKeys.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  writeFileSync(join(paths.pki, 'sa.pub'), serviceAccountKeys.publicKey.export({ type: 'spki', format: 'pem' }));
  writeFileSync(paths.adminKubeconfig, kubeconfigText(layout, paths.pki, 'admin', 'bftkube-admin'), { mode: 0o600 });
  writeFileSync(paths.controllerManagerKubeconfig, kubeconfigText(layout, paths.pki, 'controller-manager', 'system:kube-controller-manager'), { mode: 0o600 });
  writeFileSync(paths.schedulerKubeconfig, kubeconfigText(layout, paths.pki, 'scheduler', 'system:kube-scheduler'), { mode: 0o600 });
  writeFileSync(paths.nodeKubeconfig, kubeconfigText(layout, paths.pki, 'node', `system:node:${layout.nodeName}`), { mode: 0o600 });
  writeFileSync(join(paths.pki, 'complete'), '');
}
