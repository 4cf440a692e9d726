"""The Helm chart (charts/credex), offline: helm lint and helm template with the default and the
production values, every rendered manifest decoded strictly against the Kubernetes API types
(tools/go/kubecheck), the peers each NetworkPolicy allows, no credential material in any rendered
manifest, and the refusals of values.schema.json. No cluster is involved (docs/OPERATIONS.md says
what that leaves unchecked)."""

from __future__ import annotations

import functools
import re
import secrets
import subprocess

import pytest
import yaml

import credex_deploy as d
import credex_harness as h

FULL = "credex"  # release "credex" of chart "credex": objects are credex-<service>
VALUE_SETS = {
    "default": (),
    "production": (d.PRODUCTION_VALUES,),
}


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory):
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="module")
def rendered(helm_home):
    return {name: d.render(helm_home, *files) for name, files in VALUE_SETS.items()}


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(deployment: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(deployment)["env"]}


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_chart_lints(helm_home, values):
    args = ["lint", str(d.CHART), "--strict"]
    for f in VALUE_SETS[values]:
        args += ["-f", str(f)]
    res = d.helm(helm_home, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 chart(s) failed" in res.stdout


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_rendered_manifests_decode_strictly(rendered, values):
    text = rendered[values]
    res = d.kubecheck(text)
    assert res.returncode == 0, res.stderr
    checked = res.stdout.splitlines()
    assert len(checked) == len(d.documents(text)), res.stdout
    kinds = {line.split()[2] for line in checked}
    assert {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy",
            "ConfigMap", "Certificate"} <= kinds
    if values == "production":
        assert {"ServiceMonitor", "ExternalSecret"} <= kinds


@pytest.mark.parametrize("mutation, named", [
    # a misspelled field in a pod template: a server would drop it without a word
    (lambda doc: doc["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}), "readinesProbe"),
    # a right field at the wrong level
    (lambda doc: doc["spec"].update(serviceAccountName="x"), "serviceAccountName"),
    # a wrong type
    (lambda doc: doc["spec"].update(replicas="two"), "replicas"),
])
def test_kubecheck_refuses_what_a_server_would_prune(rendered, mutation, named):
    docs = d.documents(rendered["default"])
    deployment = next(x for x in docs if x["kind"] == "Deployment")
    mutation(deployment)
    res = d.kubecheck(yaml.safe_dump_all(docs))
    assert res.returncode == 1
    assert named in res.stderr and "Deployment" in res.stderr


def test_kubecheck_checks_external_secrets_against_their_crd(rendered):
    docs = d.documents(rendered["production"])
    es = next(x for x in docs if x["kind"] == "ExternalSecret")
    es["spec"]["data"][0]["remoteRef"]["propertyy"] = "client_id"
    res = d.kubecheck(yaml.safe_dump_all(docs))
    assert res.returncode == 1
    assert "remoteRef.propertyy" in res.stderr


def test_kubecheck_refuses_an_unknown_kind():
    doc = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    res = d.kubecheck(yaml.safe_dump(doc))
    assert res.returncode == 1 and "Widget" in res.stderr


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_every_service_is_a_hardened_deployment(rendered, values):
    docs = d.documents(rendered[values])
    deployments = d.by_kind(docs, "Deployment")
    for kind in ("Service", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy", "Certificate"):
        assert set(d.by_kind(docs, kind)) >= {f"{FULL}-{s}" for s in h.SERVICES}, kind
    assert set(deployments) == {f"{FULL}-{s}" for s in h.SERVICES}
    for svc in h.SERVICES:
        dep = deployments[f"{FULL}-{svc}"]
        pod = dep["spec"]["template"]["spec"]
        c = container(dep)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == f"{FULL}-{svc}"
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert c["resources"]["requests"] and c["resources"]["limits"]
        # probes on the plain-HTTP ops port, which the service is told to serve
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        env = env_of(dep)
        assert env[f"CREDEX_{svc.upper()}_OPS_ADDR"]["value"] == f"0.0.0.0:{ports['ops']}"
        assert env[f"CREDEX_{svc.upper()}_ADDR"]["value"] == f"0.0.0.0:{ports['grpc']}"
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
        # the mTLS identity: a Certificate with exactly this service's SPIFFE URI, mounted
        cert = d.by_kind(docs, "Certificate")[f"{FULL}-{svc}"]
        domain = "credex.example.com" if values == "production" else "credex.local"
        assert cert["spec"]["uris"] == [f"spiffe://{domain}/{svc}"]
        assert f"{FULL}-{svc}" in cert["spec"]["dnsNames"]
        assert {"server auth", "client auth"} <= set(cert["spec"]["usages"])
        tls = next(v for v in pod["volumes"] if v["name"] == "tls")
        assert tls["secret"]["secretName"] == cert["spec"]["secretName"]


def test_services_dial_each_other_by_service_name(rendered):
    deployments = d.by_kind(d.documents(rendered["default"]), "Deployment")
    dials = {
        "store": {"CREDEX_KEYWRAP_ADDR": "keywrap"},
        "oauth": {"CREDEX_STORE_ADDR": "store"},
        "gateway": {"CREDEX_STORE_ADDR": "store", "CREDEX_OAUTH_ADDR": "oauth"},
        "edge": {"CREDEX_GATEWAY_ADDR": "gateway"},
    }
    services = d.by_kind(d.documents(rendered["default"]), "Service")
    for svc, wanted in dials.items():
        env = env_of(deployments[f"{FULL}-{svc}"])
        for var, peer in wanted.items():
            port = next(p["port"] for p in services[f"{FULL}-{peer}"]["spec"]["ports"] if p["name"] == "grpc")
            assert env[var]["value"] == f"{FULL}-{peer}:{port}", (svc, var)


def selected_components(peers: list[dict]) -> set[str]:
    """The credex components a NetworkPolicy peer list names by pod selector; anything else
    (namespaces, CIDRs) as its kind."""
    out = set()
    for p in peers:
        labels = p.get("podSelector", {}).get("matchLabels", {})
        if "app.kubernetes.io/component" in labels and "namespaceSelector" not in p:
            out.add(labels["app.kubernetes.io/component"])
        elif "ipBlock" in p:
            out.add("cidr")
        elif "namespaceSelector" in p:
            out.add("namespace")
        else:
            out.add("pods")
    return out


def policy_peers(policy: dict, direction: str) -> dict[str, set]:
    """port -> the peers allowed to (ingress) or from (egress) it."""
    key = "from" if direction == "ingress" else "to"
    out: dict[str, set] = {}
    for rule in policy["spec"].get(direction, []):
        for port in rule["ports"]:
            out.setdefault(str(port["port"]), set()).update(selected_components(rule[key]))
    return out


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_network_policies_allow_only_each_services_peers(rendered, values):
    docs = d.documents(rendered[values])
    policies = d.by_kind(docs, "NetworkPolicy")
    prod = values == "production"
    ingress = {
        "keywrap": {"7101": {"store"}},
        "store": {"7102": {"gateway", "oauth"}},
        "oauth": {"7103": {"gateway"}},
        "gateway": {"7104": {"edge", "namespace"}},
        "edge": {"8080": {"namespace"}},
    }
    egress = {
        "keywrap": {"443": {"cidr"}} if prod else {},
        "store": {"7101": {"keywrap"}, "27017": {"cidr" if prod else "pods"}},
        "oauth": {"7102": {"store"}, "27017": {"cidr" if prod else "pods"}, "443": {"cidr"}},
        "gateway": {"7102": {"store"}, "7103": {"oauth"}, "8080": {"namespace"},
                    "443": {"namespace" if prod else "cidr"}},
        "edge": {"7104": {"gateway"}},
    }
    for svc in h.SERVICES:
        pol = policies[f"{FULL}-{svc}"]
        assert pol["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert pol["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == svc
        got_in = policy_peers(pol, "ingress")
        # the ops port only from the monitoring namespace (and the nodes' CIDRs in production)
        assert got_in.pop("9090") == ({"namespace", "cidr"} if prod else {"namespace"}), svc
        assert got_in == ingress[svc], svc
        got_out = policy_peers(pol, "egress")
        assert got_out.pop("53") == {"namespace"}, svc  # DNS: kube-dns's namespace and pods
        assert got_out == egress[svc], svc


def test_production_values_use_aws_kms_with_irsa_on_keywrap_only(rendered):
    docs = d.documents(rendered["production"])
    config = d.by_kind(docs, "ConfigMap")[f"{FULL}-config"]["data"]
    assert config["CREDEX_PRODUCTION"] == "true"
    deployments = d.by_kind(docs, "Deployment")
    keywrap = env_of(deployments[f"{FULL}-keywrap"])
    assert keywrap["CREDENTIAL_KEY_PROVIDER"]["value"] == "aws-kms"
    assert keywrap["CREDENTIAL_KMS_REGION"]["value"] == "us-west-2"
    assert "CREDEX_LOCAL_CMK_KEY_FILE" not in keywrap
    for dep in deployments.values():
        assert all(not v["name"].startswith("local-cmk") for v in dep["spec"]["template"]["spec"]["volumes"])
        assert "initContainers" not in dep["spec"]["template"]["spec"]
    accounts = d.by_kind(docs, "ServiceAccount")
    annotated = {n for n, sa in accounts.items()
                 if "eks.amazonaws.com/role-arn" in (sa["metadata"].get("annotations") or {})}
    assert annotated == {f"{FULL}-keywrap"}
    # the default release is the development one: local-cmk from a Secret, no KMS egress
    default = d.by_kind(d.documents(rendered["default"]), "Deployment")[f"{FULL}-keywrap"]
    assert env_of(default)["CREDENTIAL_KEY_PROVIDER"]["value"] == "local-cmk"
    pod = default["spec"]["template"]["spec"]
    assert any(v["name"] == "local-cmk-secret" and v["secret"]["secretName"] == "credex-local-cmk"
               for v in pod["volumes"])
    # keywrap takes the key only from a file of its own user, mode 0600 (a Secret volume's file
    # is root's and group-readable): an init container copies it into a memory volume
    (init,) = pod["initContainers"]
    key = env_of(default)["CREDEX_LOCAL_CMK_KEY_FILE"]["value"]
    assert init["command"][:3] == ["/usr/bin/install", "-m", "0600"] and init["command"][-1] == key
    assert init["securityContext"] == container(default)["securityContext"]
    mounts = {m["name"]: m["mountPath"] for m in container(default)["volumeMounts"]}
    assert "local-cmk-secret" not in mounts and key.startswith(mounts["local-cmk"] + "/")
    assert next(v for v in pod["volumes"] if v["name"] == "local-cmk")["emptyDir"]["medium"] == "Memory"


def documented_variables() -> set[str]:
    text = (h.ROOT / "docs" / "CONFIGURATION.md").read_text()
    names = set(re.findall(r"`((?:CREDEX|CAIPE|CREDENTIAL)_[A-Z0-9_]+|USE_IMPERSONATION_TOKENS|MONGOC_DISABLE_SHM|GITLAB_BASE_URL)`", text))
    for p in ("GITHUB", "CONFLUENCE", "WEBEX", "PAGERDUTY", "GITLAB"):
        names |= {f"{p}_CLIENT_ID", f"{p}_CLIENT_SECRET", f"{p}_REDIRECT_URI", f"{p}_SCOPES"}
    return names


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_every_variable_the_chart_sets_is_a_documented_one(rendered, values):
    docs = d.documents(rendered[values])
    documented = documented_variables()
    # The ops listener of each service arrives with the metrics change of issue 14; the chart
    # already sets its variable (docs/OPERATIONS.md).
    upcoming = {f"CREDEX_{s.upper()}_OPS_ADDR" for s in h.SERVICES}
    names = set(d.by_kind(docs, "ConfigMap")[f"{FULL}-config"]["data"])
    for dep in d.by_kind(docs, "Deployment").values():
        names |= set(env_of(dep))
    assert names - documented - upcoming == set()
    assert upcoming <= names


# ---- no credential material ---------------------------------------------------------------

# What an operator keeps out of the chart: the Secrets below are created with kubectl (or by
# external-secrets.io), and the values only name them. Every canary is a credential value,
# made fresh for each run (a private key generated by openssl, random passwords), so that no
# credential-shaped text lives in the repository.
@functools.cache
def canaries() -> dict[str, str]:
    key = subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                          "ec_paramgen_curve:P-256"], check=True, capture_output=True,
                         text=True).stdout
    password = "CANARY" + secrets.token_hex(8)
    return {
        "mongo-uri": f"mongodb://credex:{password}@mongo.example:27017/credex",
        "local-cmk": "CANARY" + secrets.token_hex(29),
        "github-secret": "CANARY" + secrets.token_urlsafe(24),
        "github-id": "CANARY" + secrets.token_hex(10),
        "tls-key": key,
    }


REFERENCE_NAMES = {
    "mongo.uriSecret.name": "canary-ref-mongo",
    "keyProvider.localCmk.secretName": "canary-ref-cmk",
    "oauthProviders.credentialsSecret": "canary-ref-oauth",
}
# Where a Secret's name may appear in a rendered manifest: as a reference, never as content.
REFERENCE_PATHS = (
    ("secretKeyRef", "name"), ("secretRef", "name"), ("secret", "secretName"),
    ("ExternalSecret", "metadata", "name"), ("ExternalSecret", "target", "name"),
)


def string_leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from string_leaves(v, path + (k,))
    elif isinstance(node, list):
        for v in node:
            yield from string_leaves(v, path)
    elif isinstance(node, str):
        yield path, node


def operator_secrets() -> str:
    """The Secret manifests an operator applies beside the release (not rendered by the chart)."""
    secrets = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "canary-ref-mongo"},
         "stringData": {"uri": canaries()["mongo-uri"]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "canary-ref-cmk"},
         "stringData": {"local-cmk.key": canaries()["local-cmk"]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "canary-ref-tls"},
         "type": "kubernetes.io/tls",
         "stringData": {"tls.crt": "", "tls.key": canaries()["tls-key"]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "canary-ref-oauth"},
         "stringData": {"GITHUB_CLIENT_ID": canaries()["github-id"],
                        "GITHUB_CLIENT_SECRET": canaries()["github-secret"]}},
    ]
    return yaml.safe_dump_all(secrets)


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_no_credential_material_in_rendered_manifests(helm_home, tmp_path, values):
    # The operator's own Secrets are valid manifests, and they do hold the canaries: the
    # check below would see them if the chart copied them anywhere.
    assert d.kubecheck(operator_secrets()).returncode == 0
    sets = [f"{k}={v}" for k, v in REFERENCE_NAMES.items()]
    extra = tuple(a for s in sets for a in ("--set", s))
    if values == "production":
        extra += ("--set", "keyProvider.localCmk.secretName=")
    text = d.render(helm_home, *VALUE_SETS[values], extra=extra)
    for name, canary in canaries().items():
        assert canary not in text, name
    assert "CANARY" not in text
    assert not re.search(r"BEGIN [A-Z ]*PRIVATE KEY", text)
    assert not re.search(r"mongodb(\+srv)?://[^\s/@]+:[^\s/@]+@", text)
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    docs = d.documents(text)
    assert not [x for x in docs if x["kind"] == "Secret"]
    assert not [x for x in docs if "stringData" in x or ("data" in x and x["kind"] != "ConfigMap")]
    # the references are there, and only where references go
    seen = set()
    for doc in docs:
        for path, value in string_leaves(doc):
            if not value.startswith("canary-ref-"):
                continue
            full = (doc["kind"],) + path
            assert any(full[-len(p):] == p or (p[0] == full[0] and full[-2:] == p[-2:])
                       for p in REFERENCE_PATHS), full
            seen.add(value)
    expected = {"canary-ref-mongo", "canary-ref-oauth"} | ({"canary-ref-cmk"} if values == "default" else set())
    assert seen == expected
    # no variable that may carry a credential has an inline value
    for dep in d.by_kind(docs, "Deployment").values():
        for name, e in env_of(dep).items():
            if re.search(r"SECRET|PASSWORD|TOKEN_VALUE|MONGO_URI", name):
                assert "value" not in e and "secretKeyRef" in e["valueFrom"], name


# ---- values.schema.json -------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (("--set", "production=true", "--set", "keyProvider.name=local-cmk"), "/keyProvider/name"),
    (("--set", "keyProvider.name=dev-local"), None),  # allowed outside production (below)
    (("--set", "mongo.uriSecret.name="), "/mongo/uriSecret/name"),
    (("--set", "mongo.uriSecret=null"), "uriSecret"),
    (("--set", "mongo.uri=mongodb://db:27017"), "additional properties 'uri'"),
    (("--set", "oauthProviders.github.clientSecret=s3cret"), "additional properties 'clientSecret'"),
    (("--set-json", 'services.oauth.extraEnv=[{"name":"GITHUB_CLIENT_SECRET","value":"s3cret"}]'),
     "/services/oauth/extraEnv/0"),
    (("--set-json", 'services.store.extraEnv=[{"name":"CREDEX_MONGO_URI","value":"mongodb://h"}]'),
     "/services/store/extraEnv/0"),
    (("--set", "jwt.jwksUrl=http://keycloak/certs"), "/jwt/jwksUrl"),
    (("--set", "keyProvider.name=aws-kms"), "/keyProvider/region"),
    (("--set", "keyProvider.name=aws-kms", "--set", "keyProvider.region=us-west-2",
      "--set", "keyProvider.cmkId=credex-key"), "/keyProvider/cmkId"),
    (("--set", "tls.certManager.enabled=false"), "/tls/existingSecrets"),
    (("--set", "containerSecurityContext.readOnlyRootFilesystem=false"), "readOnlyRootFilesystem"),
    (("--set", "podSecurityContext.runAsNonRoot=false"), "runAsNonRoot"),
    (("--set", "services.gateway.replicas=0"), "/services/gateway/replicas"),
    (("--set", "servces.gateway.replicas=2"), "additional properties 'servces'"),
])
def test_values_schema_refusals(helm_home, args, message):
    res = d.helm(helm_home, "template", "credex", str(d.CHART), *args)
    if message is None:
        assert res.returncode == 0, res.stderr
        return
    assert res.returncode != 0, f"accepted: {args}"
    assert "values don't meet the specifications of the schema" in res.stderr
    assert message in res.stderr, res.stderr


def test_production_values_refuse_local_cmk(helm_home):
    res = d.helm(helm_home, "template", "credex", str(d.CHART), "-f", str(d.PRODUCTION_VALUES),
                 "--set", "keyProvider.name=local-cmk")
    assert res.returncode != 0
    assert "/keyProvider/name" in res.stderr and "aws-kms" in res.stderr


def test_existing_tls_secrets_replace_cert_manager(helm_home):
    names = {s: f"my-{s}-tls" for s in h.SERVICES}
    extra = ("--set", "tls.certManager.enabled=false",
             *(a for s, n in names.items() for a in ("--set", f"tls.existingSecrets.{s}={n}")))
    text = d.render(helm_home, extra=extra)
    res = d.kubecheck(text)
    assert res.returncode == 0, res.stderr
    docs = d.documents(text)
    assert not d.by_kind(docs, "Certificate")
    for svc in h.SERVICES:
        dep = d.by_kind(docs, "Deployment")[f"{FULL}-{svc}"]
        tls = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
        assert tls["secret"]["secretName"] == names[svc]


def test_kms_endpoints_and_ca_reach_keywrap_only(helm_home):
    text = d.render(helm_home, d.PRODUCTION_VALUES, extra=(
        "--set", "keyProvider.kmsEndpoint=https://vpce-0a1b.kms.us-west-2.vpce.amazonaws.com",
        "--set", "keyProvider.stsEndpoint=https://vpce-0c2d.sts.us-west-2.vpce.amazonaws.com",
        "--set", "keyProvider.caConfigMap.name=kms-endpoint-ca"))
    assert d.kubecheck(text).returncode == 0
    deployments = d.by_kind(d.documents(text), "Deployment")
    keywrap = deployments[f"{FULL}-keywrap"]
    env = env_of(keywrap)
    assert env["CREDEX_KMS_ENDPOINT"]["value"] == "https://vpce-0a1b.kms.us-west-2.vpce.amazonaws.com"
    assert env["CREDEX_STS_ENDPOINT"]["value"] == "https://vpce-0c2d.sts.us-west-2.vpce.amazonaws.com"
    ca = env["CREDEX_KMS_CA_FILE"]["value"]
    mounts = {m["name"]: m["mountPath"] for m in container(keywrap)["volumeMounts"]}
    assert ca.startswith(mounts["kms-ca"] + "/")
    for name, dep in deployments.items():
        if name != f"{FULL}-keywrap":
            assert not {"CREDEX_KMS_ENDPOINT", "CREDEX_STS_ENDPOINT", "CREDEX_KMS_CA_FILE"} & set(env_of(dep))
    # plain http is for emulators on loopback, never a cluster's KMS
    res = d.helm(helm_home, "template", "credex", str(d.CHART), "-f", str(d.PRODUCTION_VALUES),
                 "--set", "keyProvider.kmsEndpoint=http://kms.example.com")
    assert res.returncode != 0 and "/keyProvider/kmsEndpoint" in res.stderr
