"""tokenscale: an SLO-aware autoscaler for LLM inference on Kubernetes."""
