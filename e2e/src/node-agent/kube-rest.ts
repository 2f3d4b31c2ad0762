// The node agent talks to the apiserver with the operator's REST client (one implementation for both).
export * from '../../../operator/src/kube/rest.ts';
