import { fileURLToPath } from 'node:url';

/** Where the generated CRD is committed. */
export const crdPath = fileURLToPath(new URL('../../../crds/bftclusters.bftkube.dev.yaml', import.meta.url));
