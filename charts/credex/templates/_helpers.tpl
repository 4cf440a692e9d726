{{/*
Helpers shared by every template. A "service" below is one of the five credex processes; each
template ranges over .Values.services and renders one object per enabled service.
*/}}

{{- define "credex.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "credex.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of one service's objects: <fullname>-<service> (at most 63 characters). */}}
{{- define "credex.svcname" -}}
{{- printf "%s-%s" (include "credex.fullname" .root) .svc | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "credex.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "credex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: credex
{{- end -}}

{{/* Selector labels of one service's pods: what Services, PDBs and NetworkPolicies match on. */}}
{{- define "credex.selector" -}}
app.kubernetes.io/name: {{ include "credex.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .svc }}
{{- end -}}

{{- define "credex.svclabels" -}}
{{ include "credex.labels" .root }}
app.kubernetes.io/component: {{ .svc }}
{{- end -}}

{{/* The SPIFFE identity a service's certificate must carry (docs/IDENTITY.md). */}}
{{- define "credex.spiffe" -}}
spiffe://{{ .root.Values.trustDomain }}/{{ .svc }}
{{- end -}}

{{/* The secret holding a service's mTLS certificate: cert-manager's, or the operator's own. */}}
{{- define "credex.tlsSecret" -}}
{{- if .root.Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "credex.svcname" .) -}}
{{- else -}}
{{- required (printf "tls.existingSecrets.%s is required when tls.certManager.enabled is false" .svc) (index .root.Values.tls.existingSecrets .svc) -}}
{{- end -}}
{{- end -}}

{{/* host:port another service dials for service .svc: its Service name in this namespace. */}}
{{- define "credex.dial" -}}
{{- $s := index .root.Values.services .svc -}}
{{- printf "%s:%d" (include "credex.svcname" .) (int $s.port) -}}
{{- end -}}

{{- define "credex.image" -}}
{{- $img := .root.Values.image -}}
{{- $tag := default .root.Chart.AppVersion $img.tag -}}
{{- if $img.registry -}}
{{- printf "%s/%s%s:%s" $img.registry $img.repositoryPrefix .svc $tag -}}
{{- else -}}
{{- printf "%s%s:%s" $img.repositoryPrefix .svc $tag -}}
{{- end -}}
{{- end -}}

{{/* Pod-selector peer for a NetworkPolicy rule: the pods of service .svc. */}}
{{- define "credex.peer" -}}
- podSelector:
    matchLabels:
      {{- include "credex.selector" . | nindent 6 }}
{{- end -}}

{{/* The services that are rendered, in start order. */}}
{{- define "credex.order" -}}
keywrap store oauth gateway edge
{{- end -}}

{{/* NetworkPolicy peers of an outside dependency block {namespaceSelector, podSelector, cidrs}:
CIDRs when given, else the selectors (no namespaceSelector: this namespace). */}}
{{- define "credex.extpeers" -}}
{{- if .cidrs }}
{{- range .cidrs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- else if or .namespaceSelector .podSelector }}
- {{- with .namespaceSelector }}
  namespaceSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .podSelector }}
  podSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* An egress rule to the pods of credex service .svc on its gRPC port. */}}
{{- define "credex.egressTo" -}}
- to:
    {{- include "credex.peer" . | nindent 4 }}
  ports:
    - port: {{ (index .root.Values.services .svc).port }}
      protocol: TCP
{{- end -}}
