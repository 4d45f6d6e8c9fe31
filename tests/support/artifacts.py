"""What the flows published, read back from the Prefect server as the UI shows it."""

from __future__ import annotations


def artifact_texts(key: str) -> list[str]:
    """The markdown of every artifact published under ``key``, newest first (read back from
    the Prefect server, as the UI shows them)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return [str(a.data) for a in sorted(artifacts, key=lambda a: a.created, reverse=True)]
