"""What one process knows of the cluster's security: its secret (if any) and
the objects built on it, made once from ``[cluster]`` at start-up."""
from __future__ import annotations

from dataclasses import dataclass, field

from gfsfs.common.auth import secret as secrets
from gfsfs.common.auth.hmac import Signer, Verifier
from gfsfs.common.auth.tokens import LIFETIME, TokenKeys
from gfsfs.common.config import ClusterConfig


@dataclass
class Security:
    """No secret: an open cluster (every request let in, nothing signed)."""
    secret: secrets.Secret | None = None
    token_seconds: float = LIFETIME
    _verifier: Verifier | None = field(default=None, repr=False)
    _tokens: TokenKeys | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, cluster: ClusterConfig) -> Security:
        """Raises :class:`gfsfs.common.auth.secret.SecretError` (naming the
        file) when the secret file is missing, malformed or readable by others."""
        return cls(secrets.from_config(cluster.secret_file), cluster.token_seconds)

    @property
    def on(self) -> bool:
        return self.secret is not None

    def verifier(self) -> Verifier | None:
        """The one request verifier of this process (it keeps the nonces seen)."""
        if self.secret is not None and self._verifier is None:
            self._verifier = Verifier(self.secret)
        return self._verifier

    def signer(self) -> Signer | None:
        return Signer(self.secret) if self.secret is not None else None

    def tokens(self) -> TokenKeys | None:
        if self.secret is not None and self._tokens is None:
            self._tokens = TokenKeys(self.secret, lifetime=self.token_seconds)
        return self._tokens


OPEN = Security()
