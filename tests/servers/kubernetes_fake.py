"""A fake Kubernetes API server answering TokenReview, as Vault's Kubernetes auth method asks it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from tests.servers.tls import FakeServer, Request, Response, ServerCertificate

TOKEN_REVIEW = "/apis/authentication.k8s.io/v1/tokenreviews"
NAMESPACE = "kms"
SERVICE_ACCOUNT = "cosmian-kms"


class KubernetesFake(FakeServer):
    """POST /apis/authentication.k8s.io/v1/tokenreviews: a token it signed itself is the service
    account it names; anything else is `authenticated: false`, as the real API server says."""

    def __init__(self, certificate: ServerCertificate) -> None:
        super().__init__("127.0.0.1", certificate)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.service_account_uid = str(uuid.uuid4())
        self.reviews: list[dict[str, Any]] = []

    def service_account_token(self, lifetime: int = 600) -> str:
        """A projected service-account token, as the kubelet writes it into the pod."""
        now = int(time.time())
        claims = {
            "aud": ["https://kubernetes.default.svc"],
            "iss": "https://kubernetes.default.svc",
            "sub": f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "kubernetes.io": {
                "namespace": NAMESPACE,
                "pod": {"name": "kms-0", "uid": str(uuid.uuid4())},
                "serviceaccount": {"name": SERVICE_ACCOUNT, "uid": self.service_account_uid},
            },
        }
        return jwt.encode(claims, self.key, algorithm="ES256")

    def endpoint(self, request: Request) -> str:
        return "tokenreview" if request.path == TOKEN_REVIEW else "other"

    def respond(self, endpoint: str, request: Request) -> Response:
        if endpoint != "tokenreview" or request.method != "POST":
            return Response.json(404, {"kind": "Status", "status": "Failure", "code": 404})
        try:
            review = json.loads(request.body)
            token = review["spec"]["token"]
        except (ValueError, KeyError, TypeError):
            return Response.json(400, {"kind": "Status", "status": "Failure", "code": 400})
        self.reviews.append(review)
        status: dict[str, Any] = {"authenticated": False, "error": "invalid bearer token"}
        try:
            claims = jwt.decode(
                token,
                self.key.public_key(),
                algorithms=["ES256"],
                audience="https://kubernetes.default.svc",
            )
        except jwt.InvalidTokenError:
            pass
        else:
            status = {
                "authenticated": True,
                "user": {
                    "username": claims["sub"],
                    "uid": claims["kubernetes.io"]["serviceaccount"]["uid"],
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{NAMESPACE}",
                        "system:authenticated",
                    ],
                },
                "audiences": ["https://kubernetes.default.svc"],
            }
        return Response.json(
            201,
            {
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": review["spec"],
                "status": status,
            },
        )
