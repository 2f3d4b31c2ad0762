// The operator's chart (helm/bftkube-operator), rendered by the pinned helm without a cluster: it lints
// strictly, renders the CRD, the Deployment, the ServiceAccount, least-privilege RBAC and the leader Lease,
// and its values.schema.json refuses what the templates could not use.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { binaryPaths } from '../../e2e/src/cluster/layout.ts';
import { renderCrdYaml } from './api/crd.ts';

const run = promisify(execFile);
const chartDir = fileURLToPath(new URL('../../helm/bftkube-operator', import.meta.url));
const helmBinary = binaryPaths().helm;
const helmTimeoutMs = 30_000;
const releaseNamespace = 'bftkube-system';

type Manifest = Record<string, any>;
type Rule = { apiGroups?: string[]; resources?: string[]; verbs?: string[]; resourceNames?: string[]; nonResourceURLs?: string[] };

async function helm(args: string[]): Promise<string> {
  const { stdout } = await run(helmBinary, args, { timeout: helmTimeoutMs, maxBuffer: 16 << 20 });
  return stdout;
}

/** What helm says when it refuses: its stderr. */
async function helmRefusal(args: string[]): Promise<string> {
  const failure = await helm(args).then(
    () => undefined,
    (error: { stderr?: string; message: string }) => error.stderr ?? error.message,
  );
  expect(failure, `helm ${args.join(' ')} should have been refused`).toBeDefined();
  return failure ?? '';
}

/** `helm template` with the CRD, as a list of parsed objects. */
async function render(...values: string[]): Promise<Manifest[]> {
  const text = await helm(['template', 'bftkube-operator', chartDir, '--namespace', releaseNamespace, '--include-crds', ...values.flatMap((v) => ['--set', v])]);
  const documents = parseAllDocuments(text);
  for (const document of documents) expect(document.errors).toEqual([]);
  return documents.map((document) => document.toJS() as Manifest | null).filter((object): object is Manifest => object !== null);
}

function only(objects: Manifest[], kind: string, name?: string): Manifest {
  const found = objects.filter((object) => object.kind === kind && (name === undefined || object.metadata.name === name));
  expect(found.map((object) => `${object.kind}/${object.metadata.name}`), `exactly one ${kind}${name ? ` ${name}` : ''}`).toHaveLength(1);
  return found[0]!;
}

const rbacKinds = new Set(['ClusterRole', 'Role']);

/** The rules the operator needs on BftClusters and what it makes for them, and nothing more. */
const operatorRules: Rule[] = [
  { apiGroups: ['bftkube.dev'], resources: ['bftclusters'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: ['bftkube.dev'], resources: ['bftclusters/status'], verbs: ['get', 'patch', 'update'] },
  { apiGroups: ['bftkube.dev'], resources: ['bftclusters/finalizers'], verbs: ['update'] },
  { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch', 'create', 'delete'] },
  { apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['get', 'list', 'watch', 'create', 'delete'] },
  { apiGroups: [''], resources: ['services'], verbs: ['get', 'create', 'patch'] },
  { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'create', 'patch'] },
  { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'create'] },
  { apiGroups: ['policy'], resources: ['poddisruptionbudgets'], verbs: ['get', 'create', 'patch'] },
  { apiGroups: ['events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
  { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
];

function environmentOf(deployment: Manifest): Map<string, Manifest> {
  const container = deployment.spec.template.spec.containers[0] as Manifest;
  return new Map((container.env as Manifest[]).map((entry) => [String(entry.name), entry]));
}

describe('the bftkube-operator chart', () => {
  beforeAll(() => {
    if (!existsSync(helmBinary)) throw new Error(`helm is not at ${helmBinary}: run \`npm run build:binaries\` first`);
  });

  it('passes helm lint --strict, watching every namespace or one', async () => {
    expect(await helm(['lint', '--strict', chartDir])).toContain('0 chart(s) failed');
    expect(await helm(['lint', '--strict', chartDir, '--set', 'watchNamespace=foo'])).toContain('0 chart(s) failed');
  });

  it('renders the CRD of crds/, the Deployment, the ServiceAccount, the RBAC, the Lease and the metrics Service', async () => {
    const objects = await render();
    expect(objects.map((object) => object.kind).sort()).toEqual(
      ['ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'Deployment', 'Lease', 'Role', 'RoleBinding', 'Service', 'ServiceAccount'].sort(),
    );
    expect(only(objects, 'CustomResourceDefinition')).toEqual(parse(renderCrdYaml()));
    const account = only(objects, 'ServiceAccount');
    expect(account.metadata).toMatchObject({ name: 'bftkube-operator', namespace: releaseNamespace });
    const deployment = only(objects, 'Deployment');
    expect(deployment.spec.template.spec.serviceAccountName).toBe('bftkube-operator');
    expect(only(objects, 'ClusterRoleBinding').subjects).toEqual([{ kind: 'ServiceAccount', name: 'bftkube-operator', namespace: releaseNamespace }]);
    // The chart owns the Lease (helm uninstall removes it); the operator writes its spec.
    const lease = only(objects, 'Lease');
    expect(lease).toMatchObject({ apiVersion: 'coordination.k8s.io/v1', metadata: { name: 'bftkube-operator', namespace: releaseNamespace } });
    expect(lease.spec).toBeUndefined();
    const service = only(objects, 'Service');
    expect(service.spec.ports).toEqual([{ name: 'http-metrics', port: 8080, targetPort: 'http-admin', protocol: 'TCP' }]);
    expect(service.spec.selector).toEqual(deployment.spec.selector.matchLabels);
    expect(await render('metricsService.enabled=false')).not.toContainEqual(expect.objectContaining({ kind: 'Service' }));
  });

  it('grants exactly the rules the operator needs: no wildcards, Secrets only by name, the Lease by its name', async () => {
    for (const values of [[], ['watchNamespace=foo'], ['leaderElection.leaseName=other-lease']]) {
      const objects = await render(...values);
      for (const role of objects.filter((object) => rbacKinds.has(object.kind))) {
        for (const rule of role.rules as Rule[]) {
          for (const field of ['apiGroups', 'resources', 'verbs', 'resourceNames', 'nonResourceURLs'] as const) {
            expect(rule[field] ?? [], `${role.kind}/${role.metadata.name} ${field}`).not.toContain('*');
          }
          if (rule.resources?.includes('secrets')) expect(rule.verbs?.filter((verb) => verb === 'list' || verb === 'watch'), 'secrets').toEqual([]);
        }
      }
      const leaseName = values[0]?.startsWith('leaderElection.leaseName=') ? 'other-lease' : 'bftkube-operator';
      const leaseRole = only(objects, 'Role', 'bftkube-operator-leader-election');
      expect(leaseRole.metadata.namespace).toBe(releaseNamespace);
      expect(leaseRole.rules).toEqual([{ apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: [leaseName], verbs: ['get', 'update'] }]);
      expect(only(objects, 'Lease').metadata.name).toBe(leaseName);
      expect(environmentOf(only(objects, 'Deployment')).get('LEASE_NAME')).toEqual({ name: 'LEASE_NAME', value: leaseName });
      expect(only(objects, 'RoleBinding', 'bftkube-operator-leader-election')).toMatchObject({
        metadata: { namespace: releaseNamespace },
        roleRef: { kind: 'Role', name: 'bftkube-operator-leader-election' },
        subjects: [{ kind: 'ServiceAccount', name: 'bftkube-operator', namespace: releaseNamespace }],
      });
    }
    expect(only(await render(), 'ClusterRole').rules).toEqual(operatorRules);
  });

  it('with watchNamespace=foo, grants a Role in foo instead of a ClusterRole', async () => {
    const objects = await render('watchNamespace=foo');
    expect(objects.filter((object) => object.kind === 'ClusterRole' || object.kind === 'ClusterRoleBinding')).toEqual([]);
    const role = only(objects, 'Role', 'bftkube-operator');
    expect(role.metadata.namespace).toBe('foo');
    expect(role.rules).toEqual(operatorRules);
    expect(only(objects, 'RoleBinding', 'bftkube-operator')).toMatchObject({
      metadata: { namespace: 'foo' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'bftkube-operator' },
      subjects: [{ kind: 'ServiceAccount', name: 'bftkube-operator', namespace: releaseNamespace }],
    });
    expect(environmentOf(only(objects, 'Deployment')).get('WATCH_NAMESPACE')).toEqual({ name: 'WATCH_NAMESPACE', value: 'foo' });
  });

  it('runs the operator as non-root on a read-only root filesystem, with its identity and settings in the environment', async () => {
    const deployment = only(await render(), 'Deployment');
    const pod = deployment.spec.template.spec as Manifest;
    expect(pod.automountServiceAccountToken).toBe(true);
    expect(pod.securityContext).toEqual({ runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.containers).toHaveLength(1);
    const container = pod.containers[0] as Manifest;
    expect(container.name).toBe('operator');
    expect(container.args).toBeUndefined();
    expect(container.command).toBeUndefined();
    expect(container.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    expect(container.ports).toEqual([{ name: 'http-admin', containerPort: 8080, protocol: 'TCP' }]);
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http-admin' });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http-admin' });
    expect(container.resources.limits.memory).toBeDefined();
    const environment = environmentOf(deployment);
    expect(environment.get('POD_NAME')?.valueFrom).toEqual({ fieldRef: { fieldPath: 'metadata.name' } });
    expect(environment.get('POD_NAMESPACE')?.valueFrom).toEqual({ fieldRef: { fieldPath: 'metadata.namespace' } });
    expect(environment.get('POD_IP')?.valueFrom).toEqual({ fieldRef: { fieldPath: 'status.podIP' } });
    expect(Object.fromEntries([...environment].filter(([, entry]) => entry.value !== undefined).map(([name, entry]) => [name, entry.value]))).toEqual({
      WATCH_NAMESPACE: '',
      LEASE_NAME: 'bftkube-operator',
      LEASE_DURATION_SECONDS: '15',
      LOG_LEVEL: 'info',
      ADMIN_PORT: '8080',
    });
  });

  it('refuses values that values.schema.json does not allow', async () => {
    expect(await helmRefusal(['template', 'x', chartDir, '--set', 'replicaCount=-1'])).toMatch(/schema[\s\S]*replicaCount/);
    expect(await helmRefusal(['template', 'x', chartDir, '--set', 'replicaCuont=2'])).toMatch(/schema[\s\S]*replicaCuont/);
    expect(await helmRefusal(['template', 'x', chartDir, '--set', 'image.pullPolicy=Sometimes'])).toContain('pullPolicy');
    expect(await helmRefusal(['template', 'x', chartDir, '--set', 'logLevel=loud'])).toContain('logLevel');
    expect(await helmRefusal(['lint', '--strict', chartDir, '--set', 'replicaCount=-1'])).toContain('1 chart(s) failed');
  });

  it('takes the image tag from the chart appVersion unless image.tag is set', async () => {
    const chart = parse(await readFile(`${chartDir}/Chart.yaml`, 'utf8')) as { appVersion: string };
    const imageOf = (objects: Manifest[]) => (only(objects, 'Deployment').spec.template.spec.containers[0] as Manifest).image;
    expect(imageOf(await render())).toBe(`bftkube/operator:${chart.appVersion}`);
    expect(imageOf(await render('image.tag=dev', 'image.repository=registry.example/bftkube/operator'))).toBe('registry.example/bftkube/operator:dev');
  });
});
