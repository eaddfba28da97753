#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/corpus/<target>/) from the inputs of the unit tests in src/.

Each target reads its input in its own layout (see the comment at the top of each target and
fixtures::Input): choice bytes first, then parts separated by 0xff. Run again after changing a
layout; the files are small and committed.
"""

import base64
import hashlib
import json
import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
SEP = b"\xff"

ISSUER = "https://sso.example.com/realms/dev"
NOW = 1_800_000_000
STATE = "c3RhdGUtZnV6ei1zdGF0ZS1mdXp6LXN0YXRlLWZ1eno"
SECRET = "nsseZrfUE/AHsM4ERYcYpaCfgpxPm14SyfAAFapYwC8="


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def js(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def primes():
    text = (HERE / "src" / "primes.rs").read_text()
    return [int(h, 16) for h in re.findall(r'"([0-9A-F]+)"', text)]


def write(target: str, seeds):
    folder = CORPUS / target
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for seed in seeds:
        if isinstance(seed, str):
            seed = seed.encode()
        name = hashlib.sha1(seed).hexdigest()[:16]
        (folder / name).write_bytes(seed)


def config_seeds():
    validate_base = {
        "mode": "validate",
        "keycloak": {
            "public_url": "https://sso.example.com",
            "internal_url": "http://keycloak.keycloak.svc.cluster.local:8080",
            "realm": "dev",
        },
        "authorized_parties": ["productpage"],
    }
    login_base = {
        "mode": "login",
        "keycloak": {
            "public_url": "https://sso.example.com/",
            "internal_url": "http://keycloak.keycloak.svc.cluster.local:8080",
            "realm": "dev",
        },
        "client_id": "productpage",
        "client_secret": "s3cr3t",
        "session_secret": SECRET,
    }
    login_options = dict(
        login_base,
        scopes=["profile"],
        cookie={"name": "sid", "secure": True, "same_site": "strict", "domain": ".Example.com"},
        post_logout_redirect="https://www.example.com/bye",
        on_upstream_401="pass",
        client_auth_method="client_secret_post",
        audiences=["account"],
        public_origins=["https://bookinfo.example.com", "http://localhost:8080"],
        trust_forwarded_proto=True,
        session_secret=[SECRET, "Q2hhbmdlZCBrZXkgZm9yIHJvdGF0aW9uIHRlc3RzIDEyMzQ1Ng=="],
    )
    paths = dict(
        validate_base,
        skip_paths=["/healthz", "/public/*", "/static*"],
        claims_to_headers={"preferred_username": "X-User", "realm_access.roles": "x-roles"},
        clock_skew_seconds=60,
        timeout_ms=2000,
        jwks_refresh_seconds=600,
    )
    explicit = {
        "mode": "validate",
        "oidc": {
            "issuer": ISSUER,
            "jwks_uri": "http://keycloak:8080/realms/dev/protocol/openid-connect/certs",
            "introspection_endpoint": "http://keycloak:8080/i",
            "userinfo_endpoint": "http://keycloak:8080/u",
        },
        "cluster": "outbound|8080||keycloak",
        "audiences": ["account"],
    }
    flask = {
        "mode": "login",
        "client_secrets": {
            "web": {
                "issuer": ISSUER,
                "auth_uri": ISSUER + "/protocol/openid-connect/auth",
                "client_id": "productpage",
                "client_secret": "s3cr3t",
                "redirect_uris": ["https://bookinfo.example.com/oidc_callback"],
                "userinfo_uri": "http://keycloak.keycloak.svc.cluster.local:8080/realms/dev/protocol/openid-connect/userinfo",
                "token_uri": "http://keycloak.keycloak.svc.cluster.local:8080/realms/dev/protocol/openid-connect/token",
                "token_introspection_uri": "http://keycloak.keycloak.svc.cluster.local:8080/realms/dev/protocol/openid-connect/token/introspect",
            }
        },
        "session_secret": SECRET,
    }
    bad = [
        {},
        {"mode": "proxy"},
        dict(validate_base, keycloak=dict(validate_base["keycloak"], realm="a/b")),
        dict(login_base, session_secret="changeme-changeme-changeme-changeme"),
        dict(login_base, callback_path="/logout"),
        dict(validate_base, skip_paths=["/static/../x"]),
    ]
    return [js(v) for v in [validate_base, login_base, login_options, paths, explicit, flask, *bad]]


def jwks_seeds():
    p = primes()
    e = b64((65537).to_bytes(3, "big"))

    def rsa(kid, n, **extra):
        return dict({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(n.to_bytes((n.bit_length() + 7) // 8, "big")), "e": e}, **extra)

    n = p[0] * p[1]
    ec = {"kty": "EC", "kid": "ec-1", "use": "sig", "crv": "P-256",
          "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
    return [
        js({"keys": [rsa("enc-1", n, use="enc", alg="RSA-OAEP"), rsa("rsa-1", n, alg="RS256"), ec]}),
        js({"keys": [rsa("a", p[2] * p[3]), rsa("b", p[9]), rsa("c", p[9] * p[10], alg="PS256")]}),
        js({"keys": [dict(ec, key_ops=["verify"]), {"kty": "oct", "k": "c2VjcmV0"}]}),
        js({"keys": []}),
        b'{"keys": 1}',
    ]


def token_header_seeds():
    headers = [
        {"alg": "RS256", "typ": "JWT", "kid": "rsa-1"},
        {"alg": "ES256", "kid": "ec-1"},
        {"alg": "none"},
        {"alg": "HS256", "typ": "JWT"},
        {"alg": "RS256", "typ": "at+jwt", "crit": []},
        {"alg": "RS256", "enc": "A256GCM"},
        {"alg": "PS256", "kid": 5},
    ]
    seeds = [b"\x01" + js(h) for h in headers]
    seeds.append(b'\x01{"alg":"RS256","alg":"none"}')
    seeds.append(b"\x00" + f"{b64(js(headers[0]))}.{b64(b'{}')}.c2ln".encode())
    seeds.append(b"\x00a.b")
    return seeds


def access_claims():
    return {
        "exp": NOW + 290, "iat": NOW - 10, "nbf": NOW - 10, "iss": ISSUER, "aud": "account",
        "sub": "alice-id", "typ": "Bearer", "azp": "productpage", "preferred_username": "alice",
        "realm_access": {"roles": ["user", "reader"]},
    }


def token_verify_seeds():
    rs = {"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}
    seeds = []
    access = access_claims()
    id_token = dict(access, typ="ID", aud="productpage", nonce="n-1")
    expired = dict(access, exp=NOW - 31)
    at_jwt = dict(access)
    at_jwt.pop("typ")
    for signer, options, header, claims in [
        (0, 0, rs, access),
        (0, 0x10, rs, id_token),
        (0, 1, rs, expired),
        (0, 2, {"alg": "RS256", "typ": "at+jwt"}, at_jwt),
        (5, 0, {"alg": "ES256", "kid": "ec-1"}, access),
        (5, 0x10, {"alg": "ES256"}, id_token),
        (3, 0, {"alg": "RS512", "kid": "rsa-any"}, access),
        (4, 0, {"alg": "PS256", "kid": "rsa-any"}, access),
        (7, 0, rs, access),
        (0, 0, rs, dict(access, exp=-1)),
        (0, 0, rs, dict(access, nonce=None)),
    ]:
        seeds.append(bytes([signer, options]) + js(header) + SEP + js(claims))
    seeds.append(bytes([0, 0]) + b'{"alg":"RS256","kid":"rsa-1"}' + SEP + b'{"exp":1800000100,"exp":1}')
    seeds.append(b"\xfe\x00eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    return seeds


def rsa_seeds():
    message = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9"
    seeds = []
    for p, q, e, how in [(0, 1, 0, 0), (2, 3, 3, 0), (9, 13, 0, 0), (10, 11, 6, 0), (4, 12, 0, 4),
                         (5, 6, 0, 8), (7, 8, 3, 12), (0, 1, 0, 16), (1, 2, 0, 20), (11, 12, 0, 2)]:
        seeds.append(bytes([0, p, q, e, how, 7, 0]) + message)
    seeds.append(bytes([0x80, 64]) + bytes(range(1, 255)) + bytes([255 - 1]) + SEP + bytes([0, 2, 0, 0]) + message)
    return seeds


def session_seeds():
    return [
        b"\x00eyJhbGciOiJBMjU2S1ciLCJlbmMiOiJBMjU2R0NNIn0.a.b.c.d",
        b"\x00" + b"x" * 40,
        bytes([1, 0, 0, 10, 0, 65, 0, 200, 1, 66, 1, 0, 2, 0, 0, 0, 0, 0]),
        bytes([1, 1, 0, 90, 0, 0x2e]),
        b"\x02\x05eyJhbGciOiJSUzI1NiJ9.id.sig" + SEP + b"refresh-1",
        b"\x02\x00" + SEP + b"r",
        b"\x03access_token_session=abc; access_token_session_1=def; access_token_session_3=x",
        b"\x03access_token_session_1=a; access_token_session=b; access_token_session_01=c",
        b"\x04\x00" + b"access_token_1=old; access_token_3=older" + SEP + b"eyJhbGciOiJSUzI1NiJ9.payload.sig",
        b"\x04\x3c" + SEP + b"abcdefghij",
    ]


def cookies_seeds():
    return [
        b"\x00xaccess_token=evil; access_token=\"tok\"; other=1; =x; noequals; access_token=second",
        b"\x00a=1; access_token=t",
        b"\x01Bearer t" + SEP,
        b"\x01Bearer t,Bearer t" + SEP,
        b"\x01Bearer t,Bearer u" + SEP,
        b"\x02Bearer t" + SEP + b"Bearer u" + SEP + b"access_token=t",
        b"\x00access_token=t; access_token=t; access_token_session=s; a=1",
        b"\x80access_token=t; access_token_tx_x=s",
        b"\x00access_token=ab; access_token_1=cd; access_token_2=ef; access_token_3=gh",
        b"\x01bearer   abc  " + SEP + b"access_token=abc; access_token_1=",
        b"\x40a=\xff\xfe; access_token=x",
    ]


def paths_seeds():
    return [p.encode() for p in [
        "/", "/healthz", "/healthz?", "/static/a?x=/productpage", "/static/a/./b.css", "/static//x.js",
        "/static/a/../b.css", "/static/../productpage", "/static/%2e%2e/productpage",
        "/static/.%2E/productpage", "/static/%7Euser", "/%41%62%2D%5f%30", "/static/a%3ab%2B",
        "/static/%E2%9C%93.png", "/static/..a/...b/a..", "/a/..", "/static/..%2Fproductpage",
        "/static/..;/productpage", "/static/%252e%252e/productpage", "/static/%C0%AE%C0%AE/productpage",
        "/static/..%20/productpage", "/staticx/../static/a", "/api/v1/public/x/../y", "/a/b",
    ]]


def safe_local_path_seeds():
    return [p.encode() for p in [
        "//evil.com", "/\\evil.com", "https://evil.com", "/%2F%2Fevil.com", "/%2fevil.com",
        "/%5Cevil.com", "/%252F%252Fevil.com", "evil.com", "/\t/evil.com", "/a\r\nb",
        "/", "/productpage?u=normal", "/a/b//c", "/a?next=//x", "/%C3%A9", "/a&b=%2F",
    ]]


def login_decide_seeds():
    def seed(shape, extras, what, cookies=b"", auth=b"", host=b""):
        return bytes([shape, extras]) + what.encode() + SEP + cookies + SEP + auth + SEP + host

    return [
        seed(0, 1, f"code=the-code&state={STATE}&session_state=x"),
        seed(0, 1, f"code=c&state={STATE}&state={STATE}"),
        seed(0, 1, f"error=access_denied&error_description=nope&state={STATE}"),
        seed(0, 0, "error=<script>"),
        seed(0, 1, f"state={STATE}"),
        seed(0, 1 | 64, f"code=c&state={STATE}", host=b"evil.example"),
        seed(2, 2, ""),
        seed(3, 0, "/productpage?u=normal"),
        seed(3, 4, "/productpage"),
        seed(3, 8 | 4, "/api/x"),
        seed(3, 16 | 32, "/api/x", auth=b"Bearer abc"),
        seed(3, 2, "/productpage", cookies=b"access_token=expired"),
        seed(3, 0, "/productpage", cookies=b"access_token_tx_abc=x; access_token_tx_def=y"),
        seed(0x83, 4, "/productpage"),
    ]


def token_endpoint_seeds():
    def seed(choice, body, path=b"", flags=0, extra=0):
        return bytes([choice, extra, flags]) + path + SEP + body

    good = b'{"access_token":"@A","id_token":"@I","token_type":"Bearer","expires_in":290,"refresh_expires_in":1800,"refresh_token":"r"}'
    return [
        seed(0, good),
        seed(0, good, path=b"//evil.com"),
        seed(0, good, flags=1),
        seed(0, b'{"access_token":"@A","token_type":"Bearer"}'),
        seed(0, b'{"access_token":"not-a-jwt","id_token":"@I"}'),
        seed(0, b'{"access_token":"@A","id_token":"@A"}'),
        seed(5, b'{"error":"invalid_grant","error_description":"Code not valid"}'),
        seed(6, b"<html>oops</html>"),
        seed(3, b""),
        seed(0, b'{"access_token":"@A","id_token":"@I","refresh_expires_in":0,"refresh_token":"' + b"r" * 3000 + b'"}'),
    ]


def replay_flight_seeds():
    until = (NOW + 600).to_bytes(8, "big")
    digest = bytes(range(16))
    return [
        b"\x00state-a" + SEP + SEP + b"P" + (2000).to_bytes(8, "big") + b"\x03abc",
        b"\x05state-b" + SEP + digest + until + SEP + b"D" + (9000).to_bytes(8, "big") + b"\x03abc" + (200).to_bytes(4, "big") + b'{"access_token":"x"}',
        b"\x01x" + SEP + b"\x01\x02\x03" + SEP + b"X",
        b"\x01s" + SEP + (digest + until) * 16 + SEP + b"D12345678\x05ab",
    ]


def main():
    write("config", config_seeds())
    write("jwks", jwks_seeds())
    write("token_header", token_header_seeds())
    write("token_verify", token_verify_seeds())
    write("rsa_verify", rsa_seeds())
    write("session_open", session_seeds())
    write("cookies", cookies_seeds())
    write("paths", paths_seeds())
    write("safe_local_path", safe_local_path_seeds())
    write("login_decide", login_decide_seeds())
    write("token_endpoint", token_endpoint_seeds())
    write("replay_flight", replay_flight_seeds())
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"seeds written to {CORPUS} ({total} bytes)")


if __name__ == "__main__":
    main()
