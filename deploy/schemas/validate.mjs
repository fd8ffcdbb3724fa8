// Validates Argo Rollouts and prometheus-operator objects (a JSON array on stdin)
// against the published schemas of @kubernetes-models; prints one JSON result per object.
import { AnalysisTemplate, Rollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "argoproj.io/v1alpha1/AnalysisTemplate": AnalysisTemplate,
  "argoproj.io/v1alpha1/Rollout": Rollout,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((object) => {
  const key = `${object.apiVersion}/${object.kind}`;
  const Model = models[key];
  if (!Model) return { kind: key, error: "no published schema for this kind here" };
  try {
    new Model(object).validate();
    return { kind: key, name: object.metadata?.name, error: null };
  } catch (error) {
    return { kind: key, name: object.metadata?.name, error: String(error.message ?? error) };
  }
});
console.log(JSON.stringify(results));
