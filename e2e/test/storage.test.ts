import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, freshNamespace, fromPod, httpImage, kubectl, kubeRest } from './kube.ts';

interface Pod { metadata: { uid: string }; status: { podIP?: string; containerStatuses?: Array<{ restartCount: number; ready: boolean }> } }

const dataDir = '/var/lib/bftkube-e2e/data';
const secretDir = '/etc/bftkube-e2e/creds';

function pod(namespace: string): string {
  return JSON.stringify({
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'store', namespace, labels: { app: 'store' } },
    spec: {
      terminationGracePeriodSeconds: 2,
      containers: [{
        name: 'http', image: httpImage, ports: [{ containerPort: 8080 }],
        readinessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1 },
        volumeMounts: [{ name: 'data', mountPath: dataDir }, { name: 'creds', mountPath: secretDir, readOnly: true }],
      }],
      volumes: [
        { name: 'data', persistentVolumeClaim: { claimName: 'data' } },
        { name: 'creds', secret: { secretName: 'creds' } },
      ],
    },
  });
}

async function readyPod(namespace: string, notUid?: string, restartsAtLeast = 0): Promise<Pod> {
  return eventually('pod store Ready', 60_000, async () => {
    const current = JSON.parse(await kubectl(['-n', namespace, 'get', 'pod', 'store', '-o', 'json'])) as Pod;
    const status = current.status.containerStatuses?.[0];
    if (current.metadata.uid === notUid || !status?.ready || status.restartCount < restartsAtLeast) return undefined;
    return current;
  });
}

describe('volumes on the local node', () => {
  let namespace = '';
  beforeAll(async () => {
    namespace = await freshNamespace('storage');
    await kubectl(['-n', namespace, 'create', 'secret', 'generic', 'creds', '--from-literal=password=s3cret']);
    await kubectl(['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name: 'data', namespace },
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '64Mi' } } },
    }));
    await kubectl(['apply', '-f', '-'], pod(namespace));
  });
  afterAll(async () => {
    await kubectl(['delete', 'namespace', namespace, '--wait=false']);
  });

  it('binds a PersistentVolumeClaim through the default StorageClass', async () => {
    await kubectl(['-n', namespace, 'wait', '--for=jsonpath={.status.phase}=Bound', 'pvc/data', '--timeout=60s']);
    const claim = JSON.parse(await kubectl(['-n', namespace, 'get', 'pvc', 'data', '-o', 'json'])) as { spec: { storageClassName: string; volumeName: string } };
    expect(claim.spec.storageClassName).toBe('bftkube-local');
    expect(claim.spec.volumeName).toMatch(/^pvc-/);
  });

  it('mounts a Secret readable by the container', async () => {
    const current = await readyPod(namespace);
    const reply = await fromPod<{ content: string }>(current.status.podIP!, `/file?path=${secretDir}/password`);
    expect(reply.content).toBe('s3cret');
  });

  it('keeps PVC data across a container restart and across a new pod', async () => {
    const first = await readyPod(namespace);
    await fromPod(first.status.podIP!, `/file?path=${dataDir}/hello`, { method: 'PUT', body: 'persist-me' });
    await fromPod(first.status.podIP!, '/exit?code=3');
    const restarted = await readyPod(namespace, undefined, 1);
    expect(restarted.metadata.uid).toBe(first.metadata.uid);
    expect((await fromPod<{ content: string }>(restarted.status.podIP!, `/file?path=${dataDir}/hello`)).content).toBe('persist-me');

    await kubectl(['-n', namespace, 'delete', 'pod', 'store', '--wait=true', '--timeout=60s']);
    await kubectl(['apply', '-f', '-'], pod(namespace));
    const second = await readyPod(namespace, first.metadata.uid);
    expect((await fromPod<{ content: string }>(second.status.podIP!, `/file?path=${dataDir}/hello`)).content).toBe('persist-me');
  });

  it('runs init containers first, sharing an emptyDir and downward-API files with the main container', async () => {
    await kubectl(['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'init', namespace, labels: { tier: 'e2e' } },
      spec: {
        terminationGracePeriodSeconds: 2,
        initContainers: [{ name: 'prepare', image: 'busybox:1', command: ['sh', '-c', 'echo prepared-by-init > /var/lib/bftkube-e2e/init-scratch/marker'],
          volumeMounts: [{ name: 'scratch', mountPath: '/var/lib/bftkube-e2e/init-scratch' }] }],
        containers: [{ name: 'http', image: httpImage, ports: [{ containerPort: 8080 }],
          readinessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1 },
          env: [{ name: 'MY_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } }],
          volumeMounts: [{ name: 'scratch', mountPath: '/var/lib/bftkube-e2e/scratch' }, { name: 'info', mountPath: '/etc/bftkube-e2e/info' }] }],
        volumes: [
          { name: 'scratch', emptyDir: {} },
          { name: 'info', downwardAPI: { items: [{ path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } }] } },
        ],
      },
    }));
    await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', 'pod/init', '--timeout=60s']);
    const current = JSON.parse(await kubectl(['-n', namespace, 'get', 'pod', 'init', '-o', 'json'])) as { status: { podIP: string; initContainerStatuses: Array<{ state: { terminated?: { exitCode: number } } }> } };
    expect(current.status.initContainerStatuses[0]?.state.terminated?.exitCode).toBe(0);
    expect((await fromPod<{ content: string }>(current.status.podIP, '/file?path=/var/lib/bftkube-e2e/scratch/marker')).content).toBe('prepared-by-init\n');
    expect((await fromPod<{ content: string }>(current.status.podIP, '/file?path=/etc/bftkube-e2e/info/labels')).content).toBe('tier="e2e"');
    expect((await fromPod<{ value: string }>(current.status.podIP, '/env?name=MY_NAMESPACE')).value).toBe(namespace);
  });

  it('brings a mounted ConfigMap up to date when it changes, removed keys included', async () => {
    await kubectl(['-n', namespace, 'create', 'configmap', 'settings', '--from-literal=mode=first', '--from-literal=extra=yes']);
    await kubectl(['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'settings', namespace },
      spec: { terminationGracePeriodSeconds: 2, containers: [{ name: 'http', image: httpImage, ports: [{ containerPort: 8080 }],
        readinessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1 },
        volumeMounts: [{ name: 'settings', mountPath: '/etc/bftkube-e2e/settings' }] }],
      volumes: [{ name: 'settings', configMap: { name: 'settings' } }] },
    }));
    await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', 'pod/settings', '--timeout=60s']);
    const ip = (await kubectl(['-n', namespace, 'get', 'pod', 'settings', '-o', 'jsonpath={.status.podIP}'])).trim();
    const read = async (key: string) => fromPod<{ content: string }>(ip, `/file?path=/etc/bftkube-e2e/settings/${key}`).then((reply) => reply.content, () => undefined);
    expect(await read('mode')).toBe('first');
    expect(await read('extra')).toBe('yes');
    await kubectl(['-n', namespace, 'patch', 'configmap', 'settings', '--type=json', '-p', JSON.stringify([
      { op: 'replace', path: '/data/mode', value: 'second' }, { op: 'remove', path: '/data/extra' },
    ])]);
    await eventually('the new value in the pod', 30_000, async () => (await read('mode')) === 'second');
    expect(await read('extra')).toBeUndefined();
  });

  it('injects a service-account token that the real apiserver accepts, and points the pod at it', async () => {
    const current = await readyPod(namespace);
    const token = (await fromPod<{ content: string }>(current.status.podIP!, '/file?path=/var/run/secrets/kubernetes.io/serviceaccount/token')).content;
    const namespaceFile = (await fromPod<{ content: string }>(current.status.podIP!, '/file?path=/var/run/secrets/kubernetes.io/serviceaccount/namespace')).content;
    expect(namespaceFile).toBe(namespace);
    const host = (await fromPod<{ value: string }>(current.status.podIP!, '/env?name=KUBERNETES_SERVICE_HOST')).value;
    const port = (await fromPod<{ value: string }>(current.status.podIP!, '/env?name=KUBERNETES_SERVICE_PORT')).value;
    const review = await kubeRest().post('/apis/authentication.k8s.io/v1/tokenreviews', {
      apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token },
    });
    expect(review.status.authenticated).toBe(true);
    expect(review.status.user.username).toBe(`system:serviceaccount:${namespace}:default`);
    const server = new URL(kubeRest().kubeConfig.getCurrentCluster()!.server);
    expect(`${host}:${port}`).toBe(`${server.hostname}:${server.port}`);
  });
});
