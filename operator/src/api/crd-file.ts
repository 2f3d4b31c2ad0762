import { fileURLToPath } from 'node:url';

/** Where the generated CRD is committed, for `kubectl apply -f crds/`. */
export const crdPath = fileURLToPath(new URL('../../../crds/bftclusters.bftkube.dev.yaml', import.meta.url));

/** The same file in the operator's chart, which Helm installs (and never deletes) before the templates. */
export const chartCrdPath = fileURLToPath(new URL('../../../helm/bftkube-operator/crds/bftclusters.bftkube.dev.yaml', import.meta.url));

/** Every copy of the CRD: `npm run generate:crd` writes them all, byte for byte the same. */
export const crdPaths = [crdPath, chartCrdPath] as const;
