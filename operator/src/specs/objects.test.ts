import { createPublicKey } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTlsMaterial } from '../../../replica/src/crypto/certificates.ts';
import { limits } from '../../../replica/src/constants.ts';
import { configEnvVars, loadReplicaConfig } from '../../../replica/src/server/config.ts';
import { loadSigningKeys } from '../../../replica/src/server/keys.ts';
import { type BftClusterSpec, apiVersion, bftClusterSpecSchema, kind } from '../api/bftcluster.ts';
import { type SecretData, caOf, keyFiles, newClientKeys, newClusterCa, newReplicaKeys, newViewManagerKey, publicKeysFile } from '../controller/keys.ts';
import {
  type ConfiguredView,
  type KubeObject,
  clientService,
  configFileName,
  configMap,
  dataClaim,
  disruptionBudget,
  peerService,
  replicaConfig,
  replicaPod,
  secret,
} from './objects.ts';
import {
  type ClusterRef,
  adminPort,
  clientIds,
  clientServiceName,
  clusterLabels,
  configMapName,
  containerPaths,
  dataClaimName,
  disruptionBudgetName,
  peerServiceName,
  replicaDnsName,
  replicaDnsNames,
  replicaLabels,
  replicaPodName,
  replicaPort,
  replicaSecretName,
  secretNames,
} from './names.ts';

const cluster: ClusterRef = { name: 'ledger', namespace: 'payments', uid: '0b1d3f5e-7a9c-4e2b-8d6f-1a3c5e7b9d0f' };
const defaults: BftClusterSpec = bftClusterSpecSchema.parse({});
const genesis: ConfiguredView = { number: 0, f: 1, members: [0, 1, 2, 3] };
const podIp = '10.244.1.7';

// --- What the kubelet would do with a pod: its volumes as files, its environment as variables ------------

interface KeyToPath {
  readonly key: string;
  readonly path: string;
}
interface Volume {
  readonly name: string;
  readonly configMap?: { readonly name: string; readonly items: readonly KeyToPath[] };
  readonly projected?: {
    readonly defaultMode: number;
    readonly sources: readonly {
      readonly secret?: { readonly name: string; readonly items: readonly KeyToPath[] };
      readonly configMap?: { readonly name: string; readonly items: readonly KeyToPath[] };
    }[];
  };
  readonly persistentVolumeClaim?: { readonly claimName: string };
}
interface EnvVar {
  readonly name: string;
  readonly value?: string;
  readonly valueFrom?: { readonly fieldRef: { readonly fieldPath: string } };
}
interface Container {
  readonly name: string;
  readonly args: readonly string[];
  readonly env: readonly EnvVar[];
  readonly ports: readonly { readonly name: string; readonly containerPort: number }[];
  readonly readinessProbe: { readonly httpGet: { readonly path: string; readonly port: number } };
  readonly livenessProbe: { readonly httpGet: { readonly path: string; readonly port: number } };
  readonly securityContext: { readonly allowPrivilegeEscalation: boolean; readonly readOnlyRootFilesystem: boolean; readonly capabilities: { readonly drop: readonly string[] } };
  readonly volumeMounts: readonly { readonly name: string; readonly mountPath: string; readonly readOnly?: boolean }[];
}
interface PodSpec {
  readonly hostname: string;
  readonly subdomain: string;
  readonly securityContext: { readonly runAsNonRoot: boolean; readonly runAsUser: number };
  readonly containers: readonly Container[];
  readonly volumes: readonly Volume[];
}

function podSpec(pod: KubeObject): PodSpec {
  return pod.spec as PodSpec;
}

function onlyContainer(pod: KubeObject): Container {
  const [container, ...others] = podSpec(pod).containers;
  if (container === undefined || others.length > 0) throw new Error(`expected one container, got ${podSpec(pod).containers.length}`);
  return container;
}

function dataOf(object: KubeObject): Record<string, string> {
  return (object.kind === 'Secret' ? object.stringData : object.data) as Record<string, string>;
}

/** Writes under `root` the files the pod's mounts would show, from the ConfigMaps and Secrets given (by kind/name). */
async function mountVolumes(pod: KubeObject, objects: readonly KubeObject[], root: string): Promise<void> {
  const find = (objectKind: string, name: string) => {
    const found = objects.find((o) => o.kind === objectKind && o.metadata.name === name);
    if (found === undefined) throw new Error(`the pod mounts ${objectKind} ${name}, which was not given`);
    return found;
  };
  const project = async (mountPath: string, source: KubeObject, items: readonly KeyToPath[]) => {
    for (const item of items) {
      const content = dataOf(source)[item.key];
      // The kubelet refuses to start a pod whose volume names a key its Secret or ConfigMap lacks.
      if (content === undefined) throw new Error(`${source.kind} ${source.metadata.name} has no key ${item.key}`);
      const file = join(root, mountPath, item.path);
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, content);
    }
  };
  for (const mount of onlyContainer(pod).volumeMounts) {
    const volume = podSpec(pod).volumes.find((v) => v.name === mount.name);
    if (volume === undefined) throw new Error(`mount ${mount.name} names no volume`);
    if (volume.configMap !== undefined) await project(mount.mountPath, find('ConfigMap', volume.configMap.name), volume.configMap.items);
    for (const source of volume.projected?.sources ?? []) {
      if (source.secret !== undefined) await project(mount.mountPath, find('Secret', source.secret.name), source.secret.items);
      if (source.configMap !== undefined) await project(mount.mountPath, find('ConfigMap', source.configMap.name), source.configMap.items);
    }
    if (volume.persistentVolumeClaim !== undefined) await mkdir(join(root, mount.mountPath), { recursive: true });
  }
}

/** The container's environment as the kubelet gives it: fieldRefs resolved, $(VAR) expanded. */
function environmentOf(pod: KubeObject): Record<string, string> {
  const env: Record<string, string> = {};
  for (const variable of onlyContainer(pod).env) {
    if (variable.valueFrom !== undefined) {
      expect(variable.valueFrom.fieldRef.fieldPath).toBe('status.podIP');
      env[variable.name] = podIp;
    } else {
      env[variable.name] = (variable.value ?? '').replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env[name] ?? whole);
    }
  }
  return env;
}

/** Everything reconcile puts in the cluster's ConfigMap: every member's configuration and the public keys. */
function clusterConfigMap(spec: BftClusterSpec, view: ConfiguredView, publicKeys: string): KubeObject {
  const files: Record<string, string> = { 'public-keys.json': publicKeys };
  for (const id of view.members) files[configFileName(id)] = `${JSON.stringify(replicaConfig(cluster, spec, view), null, 2)}\n`;
  return configMap(cluster, files);
}

let root = '';
let replicaKeys: Map<number, SecretData>;
let publicKeys = '';

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'bftkube-objects-'));
  const ca = await newClusterCa(cluster.name);
  replicaKeys = new Map();
  for (const id of [0, 1, 2, 3, 4]) replicaKeys.set(id, await newReplicaKeys(caOf(ca), cluster.name, cluster.namespace, id));
  const application = await newClientKeys(caOf(ca), cluster.name, clientIds.application);
  const operator = await newClientKeys(caOf(ca), cluster.name, clientIds.operator);
  publicKeys = publicKeysFile(
    new Map([...replicaKeys].map(([id, data]) => [id, data[keyFiles.signingPublic]!])),
    new Map([
      [clientIds.application, application[keyFiles.signingPublic]!],
      [clientIds.operator, operator[keyFiles.signingPublic]!],
    ]),
    newViewManagerKey()[keyFiles.signingPublic]!,
  );
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

let podCounter = 0;

/** The pod's files and environment, and the configuration its replica would load from them. */
async function startAsKubeletWould(spec: BftClusterSpec, view: ConfiguredView, id: number, joinsRunningCluster: boolean) {
  const pod = replicaPod(cluster, spec, id, { joinsRunningCluster, configHash: 'abc' });
  const replicaSecret = secret(cluster, replicaSecretName(cluster.name, id), replicaKeys.get(id)!, 'replica');
  podCounter += 1;
  const podRoot = join(root, `pod-${podCounter}`);
  await mountVolumes(pod, [clusterConfigMap(spec, view, publicKeys), replicaSecret], podRoot);
  const env = environmentOf(pod);
  const args = onlyContainer(pod).args;
  expect(args.slice(0, 2)).toEqual(['replica', '--config']);
  const config = loadReplicaConfig({ file: join(podRoot, args[2]!), env });
  return { pod, podRoot, env, config };
}

describe('owned objects', () => {
  it('each carry one controller ownerReference to the BftCluster by uid, in its namespace', () => {
    const owned = [
      configMap(cluster, {}),
      secret(cluster, secretNames.ca(cluster.name), {}, 'ca'),
      dataClaim(cluster, defaults, 0),
      peerService(cluster),
      clientService(cluster),
      disruptionBudget(cluster, 1),
      replicaPod(cluster, defaults, 0, { joinsRunningCluster: false, configHash: 'abc' }),
    ];
    for (const object of owned) {
      expect(object.metadata.namespace, object.kind).toBe(cluster.namespace);
      expect(object.metadata.ownerReferences, object.kind).toEqual([
        { apiVersion, kind, name: cluster.name, uid: cluster.uid, controller: true, blockOwnerDeletion: true },
      ]);
    }
  });

  it('include a replica’s PVC only when storage.retentionPolicy is Delete, so that Retain outlives the cluster', () => {
    expect(dataClaim(cluster, defaults, 2).metadata.ownerReferences).toHaveLength(1);
    const retain = bftClusterSpecSchema.parse({ storage: { retentionPolicy: 'Retain' } });
    const claim = dataClaim(cluster, retain, 2);
    expect(claim.metadata.ownerReferences).toBeUndefined();
    expect(claim.metadata.name).toBe(dataClaimName(cluster.name, 2));
  });

  it('give the PVC the spec’s size and storage class', () => {
    const spec = bftClusterSpecSchema.parse({ storage: { size: '5Gi', storageClassName: 'fast' } });
    expect(dataClaim(cluster, spec, 1).spec).toEqual({ accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '5Gi' } }, storageClassName: 'fast' });
    expect(dataClaim(cluster, defaults, 1).spec).not.toHaveProperty('storageClassName');
  });
});

describe('services and the disruption budget', () => {
  it('make the peer Service headless and publish not-ready addresses, selecting every replica pod on both ports', () => {
    const service = peerService(cluster);
    const spec = service.spec as { clusterIP: string; publishNotReadyAddresses: boolean; selector: Record<string, string>; ports: { port: number }[] };
    expect(service.metadata.name).toBe(peerServiceName(cluster.name));
    expect(spec.clusterIP).toBe('None');
    expect(spec.publishNotReadyAddresses).toBe(true);
    expect(spec.ports.map((p) => p.port)).toEqual([replicaPort, adminPort]);
    for (const id of [0, 3]) expect(replicaLabels(cluster.name, id)).toMatchObject(spec.selector);
  });

  it('make the client Service a normal (not headless) Service of the replica port that selects every replica pod', () => {
    const spec = clientService(cluster).spec as { clusterIP?: string; publishNotReadyAddresses?: boolean; selector: Record<string, string>; ports: { port: number }[] };
    expect(spec.clusterIP).toBeUndefined();
    expect(spec.publishNotReadyAddresses).toBeUndefined();
    expect(spec.ports.map((p) => p.port)).toEqual([replicaPort]);
    expect(replicaLabels(cluster.name, 2)).toMatchObject(spec.selector);
  });

  it('give the PodDisruptionBudget maxUnavailable = f over the replica pods', () => {
    for (const f of [0, 1, 2]) {
      const spec = disruptionBudget(cluster, f).spec as { maxUnavailable: number; selector: { matchLabels: Record<string, string> } };
      expect(spec.maxUnavailable).toBe(f);
      expect(replicaLabels(cluster.name, 1)).toMatchObject(spec.selector.matchLabels);
    }
    expect(disruptionBudget(cluster, 1).metadata.name).toBe(disruptionBudgetName(cluster.name));
  });
});

describe('the replica Pod', () => {
  const pod = replicaPod(cluster, defaults, 2, { joinsRunningCluster: false, configHash: 'c0ffee' });
  const container = onlyContainer(pod);
  const volume = (name: string) => podSpec(pod).volumes.find((v) => v.name === name);

  it('is named and labelled for replica 2, runs the spec’s image and carries the config hash', () => {
    expect(pod.metadata.name).toBe(replicaPodName(cluster.name, 2));
    expect(pod.metadata.labels).toEqual(replicaLabels(cluster.name, 2));
    expect(pod.metadata.annotations).toEqual({ 'bftkube.dev/config-hash': 'c0ffee' });
    expect((pod.spec as { containers: { image: string }[] }).containers[0]!.image).toBe(defaults.image);
  });

  it('has hostname and subdomain that give it the DNS name its certificate and the configuration name', () => {
    const spec = podSpec(pod);
    expect(`${spec.hostname}.${spec.subdomain}.${cluster.namespace}.svc.cluster.local`).toBe(replicaDnsName(cluster.name, cluster.namespace, 2));
    expect(spec.subdomain).toBe(peerService(cluster).metadata.name);
  });

  it('mounts its own Secret’s items where replica/src/server/keys.ts and readTlsMaterial read them', () => {
    const projected = volume('keys')?.projected;
    expect(container.volumeMounts).toContainEqual({ name: 'keys', mountPath: containerPaths.keys, readOnly: true });
    const fromSecret = projected?.sources.find((s) => s.secret !== undefined)?.secret;
    expect(fromSecret?.name).toBe(replicaSecretName(cluster.name, 2));
    expect(fromSecret?.items).toEqual([
      { key: keyFiles.caCert, path: 'ca.crt' },
      { key: keyFiles.tlsCert, path: 'replica-2.crt' },
      { key: keyFiles.tlsKey, path: 'replica-2.key' },
      { key: keyFiles.signingKey, path: 'signing/replica-2.pem' },
    ]);
    const fromConfigMap = projected?.sources.find((s) => s.configMap !== undefined)?.configMap;
    expect(fromConfigMap).toEqual({ name: configMapName(cluster.name), items: [{ key: 'public-keys.json', path: 'signing/public-keys.json' }] });
    // Private keys readable by their owner only.
    expect(projected?.defaultMode).toBe(0o400);
  });

  it('mounts only its own configuration file from the ConfigMap, at the path its --config argument names', () => {
    expect(volume('config')?.configMap).toEqual({ name: configMapName(cluster.name), items: [{ key: 'replica-2.json', path: 'replica-2.json' }] });
    expect(container.volumeMounts).toContainEqual({ name: 'config', mountPath: containerPaths.config, readOnly: true });
    expect(container.args).toEqual(['replica', '--config', `${containerPaths.config}/${configFileName(2)}`]);
  });

  it('mounts its PVC by name, writable, at the data directory', () => {
    expect(volume('data')?.persistentVolumeClaim).toEqual({ claimName: dataClaim(cluster, defaults, 2).metadata.name });
    const mount = container.volumeMounts.find((m) => m.name === 'data');
    expect(mount).toEqual({ name: 'data', mountPath: containerPaths.data });
  });

  it('runs as non-root with a read-only root filesystem, no privilege escalation and no capabilities', () => {
    expect(podSpec(pod).securityContext.runAsNonRoot).toBe(true);
    expect(podSpec(pod).securityContext.runAsUser).toBeGreaterThan(0);
    expect(container.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
  });

  it('exposes the replica and admin ports and probes /readyz and /healthz on the admin port', () => {
    expect(container.ports.map((p) => p.containerPort)).toEqual([replicaPort, adminPort]);
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: adminPort });
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: adminPort });
  });

  it('sets BFTKUBE_REPLICA_ID, and BFTKUBE_JOINS_RUNNING_CLUSTER only when the replica joins a running cluster', () => {
    const names = (p: KubeObject) => onlyContainer(p).env.map((e) => e.name);
    expect(container.env).toContainEqual({ name: 'BFTKUBE_REPLICA_ID', value: '2' });
    expect(names(pod)).not.toContain('BFTKUBE_JOINS_RUNNING_CLUSTER');
    const joining = replicaPod(cluster, defaults, 2, { joinsRunningCluster: true, configHash: 'c0ffee' });
    expect(onlyContainer(joining).env).toContainEqual({ name: 'BFTKUBE_JOINS_RUNNING_CLUSTER', value: 'true' });
  });

  it('sets only BFTKUBE_* variables that the replica’s configuration loader knows', () => {
    const joining = replicaPod(cluster, defaults, 2, { joinsRunningCluster: true, configHash: 'c0ffee' });
    for (const variable of onlyContainer(joining).env.filter((e) => e.name.startsWith('BFTKUBE_'))) expect(configEnvVars.has(variable.name), variable.name).toBe(true);
  });

  it('gives the replica, once its volumes are mounted, the TLS material and signing keys of its own Secret', async () => {
    const { podRoot, config } = await startAsKubeletWould(defaults, genesis, 2, false);
    const keysDir = join(podRoot, config.keysDir);
    const data = replicaKeys.get(2)!;
    const tls = await readTlsMaterial(keysDir, 'replica-2');
    expect(tls).toEqual({ caPem: data[keyFiles.caCert], certPem: data[keyFiles.tlsCert], keyPem: data[keyFiles.tlsKey] });
    const signing = await loadSigningKeys(keysDir, 'replica-2');
    expect(signing.privateKeyPem).toBe(data[keyFiles.signingKey]);
    // The private key it signs with is the one every replica checks its votes against.
    const raw = Buffer.from(createPublicKey(signing.privateKeyPem).export({ format: 'jwk' }).x!, 'base64url');
    expect(Buffer.from(signing.replicaPublicKeys.get(2)!)).toEqual(raw);
    expect([...signing.replicaPublicKeys.keys()].sort()).toEqual([0, 1, 2, 3, 4]);
    expect([...signing.clientPublicKeys.keys()].sort()).toEqual([clientIds.operator, clientIds.application].sort());
    expect(signing.viewManagerPublicKey).toHaveLength(32);
  });
});

describe('replicaConfig', () => {
  it('is accepted by the replica’s own loader with the environment the pod gives, for a starting member of a bft cluster', async () => {
    const { config } = await startAsKubeletWould(defaults, genesis, 1, false);
    expect(config.replicaId).toBe(1);
    expect(config.cluster).toEqual({
      name: cluster.name,
      view: {
        number: 0,
        mode: 'bft',
        f: 1,
        members: [0, 1, 2, 3].map((id) => ({ id, host: replicaDnsName(cluster.name, cluster.namespace, id), port: replicaPort, adminPort })),
      },
    });
    expect(config.listen).toEqual({ host: podIp, port: replicaPort, adminHost: podIp, adminPort });
    expect(config.keysDir).toBe(containerPaths.keys);
    expect(config.dataDir).toBe(containerPaths.data);
    expect(config.durability).toBe('fsync');
    expect(config.requireSignedRequests).toBe(false);
    expect(config.joinsRunningCluster).toBe(false);
    expect(config.service.module).toBe('builtin:kv');
  });

  it('is accepted for a crash cluster with batching, signed requests and service configuration, and carries them', async () => {
    const spec = bftClusterSpecSchema.parse({
      replicas: 3,
      faultModel: 'crash',
      durability: 'batch',
      batch: { requestsMax: 256, bytesMax: 65_536, fillPercent: 0 },
      requireSignedRequests: true,
      service: { module: 'builtin:kv', config: { keysMax: 1000 } },
    });
    const { config } = await startAsKubeletWould(spec, { number: 0, f: 1, members: [0, 1, 2] }, 0, false);
    expect(config.cluster.view.mode).toBe('crash');
    expect(config.durability).toBe('batch');
    expect(config.batch).toEqual({ requestsMax: 256, bytesMax: 65_536, fillPercent: 0, fillWaitMs: 2 });
    expect(config.requireSignedRequests).toBe(true);
    expect(config.service.config).toEqual({ keysMax: 1000 });
  });

  it('is accepted for a replica added to a running cluster, in the view that added it, and it then joins as one', async () => {
    const added: ConfiguredView = { number: 3, f: 1, members: [0, 1, 2, 3, 4] };
    const { config } = await startAsKubeletWould(defaults, added, 4, true);
    expect(config.replicaId).toBe(4);
    expect(config.cluster.view.number).toBe(3);
    expect(config.cluster.view.members.map((m) => m.id)).toEqual([0, 1, 2, 3, 4]);
    expect(config.joinsRunningCluster).toBe(true);
  });
});

describe('names', () => {
  // What the API server checks (k8s.io/apimachinery validation): labels, subdomains, DNS-1035 labels for Services.
  const dns1123Label = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
  const dns1035Label = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
  const isLabel = (name: string) => name.length <= 63 && dns1123Label.test(name);
  const isSubdomain = (name: string) => name.length <= 253 && name.split('.').every(isLabel);
  const isServiceName = (name: string) => name.length <= 63 && dns1035Label.test(name);
  const isLabelValue = (value: string) => value.length <= 63 && /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(value);

  const longName = 'settlement-ledger-eu-west-production-001';
  const namespace = 'payments-settlement-prod';
  const ids = [0, 7, limits.replicaIdMax];

  it('has a 40-character cluster name for these checks', () => {
    expect(longName).toHaveLength(40);
  });

  it('gives pods names that are DNS-1123 labels, usable as their hostname', () => {
    for (const id of ids) expect(isLabel(replicaPodName(longName, id)), replicaPodName(longName, id)).toBe(true);
  });

  it('gives Services names that are DNS-1035 labels', () => {
    for (const name of [peerServiceName(longName), clientServiceName(longName)]) expect(isServiceName(name), name).toBe(true);
  });

  it('gives PVCs, Secrets, the ConfigMap and the PodDisruptionBudget names that are DNS-1123 subdomains', () => {
    const names = [
      configMapName(longName),
      disruptionBudgetName(longName),
      secretNames.ca(longName),
      secretNames.viewManager(longName),
      secretNames.client(longName),
      secretNames.operatorClient(longName),
      ...ids.flatMap((id) => [dataClaimName(longName, id), replicaSecretName(longName, id)]),
    ];
    for (const name of names) expect(isSubdomain(name), name).toBe(true);
  });

  it('gives label values Kubernetes accepts', () => {
    const values = [...Object.values(clusterLabels(longName)), ...ids.flatMap((id) => Object.values(replicaLabels(longName, id)))];
    for (const value of values) expect(isLabelValue(value), value).toBe(true);
  });

  it('gives replica DNS names that are DNS subdomains, the dialled one among those the certificate lists', () => {
    for (const id of ids) {
      const names = replicaDnsNames(longName, namespace, id);
      expect(names).toContain(replicaDnsName(longName, namespace, id));
      for (const name of names) expect(isSubdomain(name), name).toBe(true);
    }
  });
});
