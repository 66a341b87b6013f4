"""Print the SQL that trusts every issuer of tests/vectors/idp.json
(tenantguard.trust_issuer, one call per issuer; run as tenantguard_admin)."""
import json
import pathlib
import sys

d = json.loads((pathlib.Path(__file__).parent / "idp.json").read_text())


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def arr(a):
    return "ARRAY[" + ",".join(lit(x) for x in a) + "]::text[]"


for i in d["issuers"]:
    print(f"SELECT tenantguard.trust_issuer({lit(i['iss'])}, {lit(json.dumps(i['jwks']))}::jsonb, {arr(i['audiences'])}, "
          f"{lit(json.dumps(i['mapping']))}::jsonb, {arr(i['algorithms'])}, {lit(i['audience_claim'])}, "
          f"make_interval(secs => {i['max_lifetime_s']}), make_interval(secs => {i['leeway_s']}), "
          f"{lit(json.dumps(i['required']))}::jsonb);")
