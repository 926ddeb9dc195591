import json
problem={"$ref":"#/components/responses/Problem"}
def op(summary, perm, ok_status="200", ok_schema=None, body=None, params=None, tag=None, ok_content="application/json"):
    o={"summary":summary,"description":f"Needs the `{perm}` permission.","tags":[tag],"x-cohort-permission":perm,
       "responses":{ok_status:{"description":"OK"},"400":problem,"401":problem,"403":problem,"404":problem,"429":problem,"503":problem}}
    if ok_schema: o["responses"][ok_status]["content"]={ok_content:{"schema":ok_schema}}
    if body: o["requestBody"]={"required":True,"content":{"application/json":{"schema":body}}}
    if params: o["parameters"]=params
    return o
ref=lambda n:{"$ref":f"#/components/schemas/{n}"}
page=[{"name":"page_size","in":"query","schema":{"type":"integer","minimum":1,"maximum":1000,"default":100}},
      {"name":"page_token","in":"query","schema":{"type":"string"},"description":"next_page_token of the previous page"}]
pid=lambda d:[{"name":"id","in":"path","required":True,"schema":{"type":"string"},"description":d}]
dig=[{"name":"digest","in":"path","required":True,"schema":{"type":"string","pattern":"^[0-9a-f]{64}$"}}]
def public(o):
    o["security"]=[]
    o["description"]="No bearer token: the enrollment token, or the site's certificate, authenticates the gateway."
    return o
def lst(name, item): return {"type":"object","properties":{name:{"type":"array","items":ref(item)},"next_page_token":{"type":"string"}}}
q=lambda n,d: {"name":n,"in":"query","schema":{"type":"integer","minimum":0},"description":d}
paths={
 "/v1/whoami":{"get":op("The token's person and role","self",ok_schema=ref("Whoami"),tag="people")},
 "/v1/cluster":{"get":op("Members and leader","cluster.read",ok_schema=ref("Cluster"),tag="cluster")},
 "/v1/cluster/nodes":{"post":op("Add a voter","cluster.write",ok_schema=ref("Cluster"),body={"type":"object","required":["id","raft_addr"],"properties":{"id":{"type":"string"},"raft_addr":{"type":"string"}}},tag="cluster")},
 "/v1/cluster/nodes/{id}":{"delete":op("Remove a member","cluster.write",ok_schema=ref("Cluster"),params=pid("node id"),tag="cluster")},
 "/v1/cluster/backup":{"get":op("Back up the cluster: a tar of the leader's latest Raft snapshot (state and audit leaves) and every blob it names","cluster.write",ok_schema={"type":"string","format":"binary"},ok_content="application/x-tar",tag="cluster")},
 "/v1/cluster/restore":{"post":op("Restore a backup into this cluster (it keeps its membership; everything else becomes the backup's)","cluster.write",ok_schema=ref("RestoreResult"),params=[{"name":"confirm","in":"query","required":True,"schema":{"type":"string","enum":["replace-state"]}}],tag="cluster")},
 "/v1/sites":{"get":op("List sites","sites.read",ok_schema=lst("sites","Site"),params=page,tag="sites"),
              "post":op("Create (enroll) a site","sites.write","201",ref("Site"),body={"type":"object","required":["id"],"properties":{"id":{"type":"string","pattern":"^[a-z0-9][a-z0-9._-]{0,62}$"}}},tag="sites")},
 "/v1/sites/{id}":{"get":op("Show a site","sites.read",ok_schema=ref("Site"),params=pid("site id"),tag="sites")},
 "/v1/sites/{id}/revoke":{"post":op("Revoke a site: its connections close and new ones are refused","sites.write",ok_schema=ref("Site"),params=pid("site id"),tag="sites")},
 "/v1/sites/{id}/enrollment-tokens":{"post":op("Create a one-time enrollment token for the site (shown once)","sites.write","201",ref("EnrollToken"),params=pid("site id"),body={"type":"object","properties":{"ttl":{"type":"string","description":"Go duration, default 24h, at most 720h"}}},tag="sites")},
 "/v1/enroll":{"post":public(op("Enroll a gateway: a one-time enrollment token and a CSR for an ECDSA P-256 key give a site certificate","","201",ref("Certificate"),body=ref("EnrollRequest"),tag="gateways"))},
 "/v1/renew":{"post":public(op("Renew a site certificate, authenticated by the current one (mutual TLS)","","200",ref("Certificate"),body=ref("EnrollRequest"),tag="gateways"))},
 "/v1/jobs":{"get":op("List jobs","jobs.read",ok_schema=lst("jobs","Job"),params=page,tag="jobs"),
             "post":op("Create a job from a spec","jobs.write","201",ref("Job"),body=ref("JobSpec"),tag="jobs")},
 "/v1/jobs/{id}":{"get":op("Show a job","jobs.read",ok_schema=ref("Job"),params=pid("job id"),tag="jobs")},
 "/v1/jobs/{id}/pause":{"post":op("Pause: no new round opens; an open round runs to its end","jobs.write",ok_schema=ref("Job"),params=pid("job id"),tag="jobs")},
 "/v1/jobs/{id}/resume":{"post":op("Resume a paused job","jobs.write",ok_schema=ref("Job"),params=pid("job id"),tag="jobs")},
 "/v1/jobs/{id}/cancel":{"post":op("Cancel a job (its open round fails)","jobs.write",ok_schema=ref("Job"),params=pid("job id"),tag="jobs")},
 "/v1/jobs/{id}/rounds":{"get":op("A job's rounds","jobs.read",ok_schema=lst("rounds","Round"),params=pid("job id")+page,tag="jobs")},
 "/v1/jobs/{id}/results":{"get":op("An analytics job's results, or an evaluation job's (409 for a training job, or before they are committed)","jobs.read",ok_schema={"oneOf":[ref("AnalyticsResult"),ref("Evaluation")]},params=pid("job id"),tag="jobs")},
 "/v1/jobs/{id}/models":{"get":op("The job's model versions in the registry, with lineage and stage","models.read",ok_schema=lst("models","ModelVersion"),params=pid("job id")+page,tag="registry")},
 "/v1/jobs/{id}/models/{digest}":{"get":op("One model version: lineage, stage, federated evaluations","models.read",ok_schema=ref("ModelVersion"),params=pid("job id")+dig,tag="registry")},
 "/v1/jobs/{id}/models/{digest}/card":{"get":op("The version's model card","models.read",ok_schema={"type":"string"},ok_content="text/markdown",params=pid("job id")+dig,tag="registry")},
 "/v1/jobs/{id}/models/{digest}/stage":{"post":op("Move a version to a stage; promoting to production archives the version it replaces","models.write",ok_schema=ref("ModelVersion"),params=pid("job id")+dig,body={"type":"object","required":["stage"],"properties":{"stage":{"type":"string","enum":["candidate","staging","production","archived"]}}},tag="registry")},
 "/v1/jobs/{id}/models/{digest}/evaluate":{"post":op("Create an evaluation job scoring the version at every site on its held-out records","jobs.write","201",ref("Job"),params=pid("job id")+dig,body={"type":"object","properties":{"id":{"type":"string"},"min_sites":{"type":"integer"},"round_timeout":{"type":"string"},"bins":{"type":"integer","maximum":100},"min_cell":{"type":"integer"}}},tag="registry")},
 "/v1/jobs/{id}/rollback":{"post":op("Bring back the version that was in production before the current one","models.write",ok_schema=ref("ModelVersion"),params=pid("job id"),tag="registry")},
 "/v1/models":{"get":op("Committed global models","models.read",ok_schema=lst("models","Model"),params=page+[{"name":"job","in":"query","schema":{"type":"string"}}],tag="models")},
 "/v1/models/{digest}":{"get":op("Show a model","models.read",ok_schema=ref("Model"),params=dig,tag="models")},
 "/v1/models/{digest}/weights":{"get":op("Download a committed model's weights (packed little-endian float32)","models.download",ok_schema={"type":"string","format":"binary"},ok_content="application/octet-stream",params=dig,tag="models")},
 "/v1/tokens":{"get":op("List tokens (never their secrets)","tokens.read",ok_schema=lst("tokens","Token"),params=page,tag="people"),
               "post":op("Create a token for a person and role; the secret is in this answer only","tokens.write","201",ref("Token"),body={"type":"object","required":["person","role"],"properties":{"person":{"type":"string","maxLength":64},"role":{"type":"string","enum":["admin","break-glass","operator","auditor","viewer"]},"ttl":{"type":"string","description":"Go duration, default 1h, at most 2160h"}}},tag="people")},
 "/v1/tokens/{id}":{"delete":op("Revoke a token","tokens.write",ok_schema=ref("Token"),params=pid("token id"),tag="people")},
 "/v1/audit/entries":{"get":op("Audit log entries","audit.read",ok_schema=ref("AuditEntries"),params=[q("start","first index"),q("limit","at most 1000; 0 returns only the size"),{"name":"hashes","in":"query","schema":{"type":"boolean"},"description":"add the leaves' hashes"},{"name":"raw","in":"query","schema":{"type":"boolean"},"description":"add each entry's exact stored bytes (base64)"}],tag="audit")},
 "/v1/audit/checkpoint":{"get":op("The answering node's latest signed checkpoint","audit.read",ok_schema=ref("Checkpoint"),tag="audit")},
 "/v1/audit/proofs/inclusion":{"get":op("RFC 6962 inclusion proof","audit.read",ok_schema=ref("Proof"),params=[q("index","leaf index"),q("size","tree size")],tag="audit")},
 "/v1/audit/proofs/consistency":{"get":op("RFC 6962 consistency proof","audit.read",ok_schema=ref("Proof"),params=[q("from","older size"),q("to","newer size")],tag="audit")},
}
ts={"type":"string","format":"date-time"}
S=lambda **p:{"type":"object","properties":p}
schemas={
 "ModelVersion":S(job={"type":"string"},digest={"type":"string"},round={"type":"integer"},size={"type":"integer"},stage={"type":"string","enum":["candidate","staging","production","archived"]},parent={"type":"string"},committed=ts,strategy={"type":"string"},contributors={"type":"array","items":{"type":"string"}},samples={"type":"integer"},mean_val_auroc={"type":"number"},epsilon_spent={"type":"number"},secure_aggregation={"type":"boolean"},evaluations={"type":"array","items":ref("Evaluation")}),
 "EvalReport":S(count={"type":"integer"},positives={"type":"integer"},auroc={"type":"number"},auprc={"type":"number"},accuracy={"type":"number"},brier={"type":"number"},calibration={"type":"array","items":S(count={"type":"integer"},positives={"type":"integer"},sum_predicted={"type":"number"},suppressed={"type":"boolean"})}),
 "Evaluation":S(job={"type":"string"},at=ts,sites={"type":"object","additionalProperties":ref("EvalReport")},pooled=ref("EvalReport")),
 "Problem":S(type={"type":"string"},title={"type":"string"},status={"type":"integer"},detail={"type":"string"}),
 "Whoami":S(person={"type":"string"},role={"type":"string"},token_id={"type":"string"},expires=ts),
 "Cluster":S(node={"type":"string"},leader={"type":"string"},nodes={"type":"array","items":S(id={"type":"string"},raft_addr={"type":"string"},voter={"type":"boolean"},leader={"type":"boolean"},version={"type":"string","description":"the node's build when it last became leader"},agent_addr={"type":"string"},admin_addr={"type":"string"},status_addr={"type":"string"},audit_key={"type":"string"})}),
 "Site":S(id={"type":"string"},created=ts,revoked=ts,online={"type":"boolean"},last_seen=ts,cert_expires=ts,agent_version={"type":"string","description":"what the agent said it runs at its last hello to this leader"},protocol={"type":"integer","description":"the protocol version agreed with it"}),
 "Round":S(round={"type":"integer"},kind={"type":"string"},attempt={"type":"integer"},state={"type":"string"},selected={"type":"array","items":{"type":"string"}},contributors={"type":"array","items":{"type":"string"}},samples={"type":"integer"},mean_val_auroc={"type":"number"},model={"type":"string"},fail_reason={"type":"string"},secagg_phase={"type":"string","description":"An open secure aggregation round's protocol phase: AdvertiseKeys, ShareKeys, MaskedInput or Unmasking."}),
 "Job":S(id={"type":"string"},state={"type":"string","enum":["running","paused","done","failed","cancelled"]},rounds={"type":"integer"},committed_rounds={"type":"integer"},fail_reason={"type":"string"},stop_reason={"type":"string"},retrain_of={"type":"string"},retrained_by={"type":"string"},created=ts,finished=ts,history={"type":"array","items":ref("Round")},privacy=S(epsilon_spent={"type":"number"},epsilon_budget={"type":"number"},delta={"type":"number"},noise_multiplier={"type":"number"},clip_norm={"type":"number"},rounds={"type":"integer"})),
 "JobSpec":{"type":"object","description":"See docs/operating-a-federation.md: id, kind (train or analytics), rounds, model, train, strategy, sampling, min_sites, round_timeout, max_attempts, features, analytics, privacy, secure_aggregation.","properties":{"id":{"type":"string"}},"required":["id"]},
 "AnalyticsResult":S(sites={"type":"array","items":{"type":"string"}},cohort={"type":"integer","description":"eligible patients; omitted with noise"},k={"type":"integer","description":"cells under k are suppressed"},epsilon={"type":"number"},features={"type":"array","items":S(name={"type":"string"},n={"type":"integer"},suppressed={"type":"boolean"},mean={"type":"number"},std={"type":"number","description":"sample standard deviation"},histogram=S(edges={"type":"array","items":{"type":"number"}},counts={"type":"array","items":{"type":"integer"}},suppressed={"type":"array","items":{"type":"boolean"}}),quantiles={"type":"array","items":S(q={"type":"number"},value={"type":"number"})})}),
 "Model":S(digest={"type":"string"},job={"type":"string"},round={"type":"integer"},size={"type":"integer"}),
 "Token":S(id={"type":"string"},person={"type":"string"},role={"type":"string"},created=ts,expires=ts,revoked=ts,created_by={"type":"string"},token={"type":"string","description":"the secret, in the create answer only"}),
 "AuditEntries":S(size={"type":"integer"},start={"type":"integer"},entries={"type":"array","items":ref("AuditEntry")},leaf_hashes={"type":"array","items":{"type":"string"}},raw={"type":"array","items":{"type":"string","format":"byte"}}),
 "AuditEntry":S(index={"type":"integer"},time=ts,kind={"type":"string"},actor={"type":"string"},token_id={"type":"string"},role={"type":"string"},break_glass={"type":"boolean"},action={"type":"string"},target={"type":"string"},outcome={"type":"string","enum":["ok","denied","error"]},status={"type":"integer"},remote={"type":"string"},node={"type":"string"},request_id={"type":"string"}),
 "Checkpoint":S(origin={"type":"string"},size={"type":"integer"},root={"type":"string","format":"byte"},time=ts,key_id={"type":"string"},sig={"type":"string","format":"byte"},node={"type":"string"}),
 "EnrollToken":S(id={"type":"string"},site={"type":"string"},expires=ts,token={"type":"string"}),
 "EnrollRequest":S(token={"type":"string","description":"enrollment only"},csr={"type":"string","description":"PEM CERTIFICATE REQUEST, ECDSA P-256"}),
 "Certificate":S(site={"type":"string"},certificate={"type":"string"},ca={"type":"string"},not_after=ts),
 "Proof":S(index={"type":"integer"},size={"type":"integer"},to={"type":"integer"},hashes={"type":"array","items":{"type":"string","format":"byte"}}),
}
schemas["Proof"]["properties"]["from"]={"type":"integer"}
schemas["RestoreResult"]=S(index={"type":"integer"},term={"type":"integer"},blobs={"type":"integer"},audit_size={"type":"integer"},from_node={"type":"string"})
paths["/v1/cluster/restore"]["post"]["requestBody"]={"required":True,"content":{"application/x-tar":{"schema":{"type":"string","format":"binary"},"description":"a backup from GET /v1/cluster/backup"}}}
doc={"openapi":"3.1.0","info":{"title":"Cohort admin API","version":"1","description":"HTTPS, JSON. Every route needs `Authorization: Bearer <token>`; every request is recorded in the audit log. Errors are RFC 9457 problem details."},
 "servers":[{"url":"/"}],"security":[{"bearer":[]}],
 "paths":paths,
 "components":{"securitySchemes":{"bearer":{"type":"http","scheme":"bearer"}},
  "responses":{"Problem":{"description":"RFC 9457 problem details","content":{"application/problem+json":{"schema":ref("Problem")}}}},
  "schemas":schemas}}
print(json.dumps(doc,indent=1))
