"""Redis key layout, version 1 (docs/state-layout.md). Keys are built here and nowhere else.

Every multi-key call touches one Redis Cluster slot: per-user keys carry the user id in a
{hash tag} (all of a user's keys share a slot), each item's co-visits its item id, and the
global keys one tag per concern: {pop} for popularity, its landmark and categories (a landmark
move rescales them all at once), {collab} for the collaborative versions (the switch reads and
writes two of them). docs/state-layout.md says what stays atomic on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LAYOUT_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class KeySpace:
    namespace: str = "rs"
    # Built once: the ingest write formats a few keys per event.
    _prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prefix", f"{self.namespace}:{LAYOUT_VERSION}")

    def user_state(self, user_id: str) -> str:
        """Hash: vec (float32 bytes), last, floor, n, recent (JSON), model, cr (JSON),
        cvec (float32 bytes), cver; ids (JSON) only in states written before the guards moved
        to their own sorted set (read, never written)."""
        return f"{self._prefix}:u:{{{user_id}}}:state"

    def user_guards(self, user_id: str) -> str:
        """Sorted set: event id -> event time (ms), the applied events inside the lateness
        window (at most 1024), written incrementally."""
        return f"{self._prefix}:u:{{{user_id}}}:ids"

    def user_seen(self, user_id: str) -> str:
        """Sorted set: item id -> last interaction time (ms), capped to the newest N."""
        return f"{self._prefix}:u:{{{user_id}}}:seen"

    def user_last_recommendations(self, user_id: str) -> str:
        """String (JSON), short TTL: the last response served to the user."""
        return f"{self._prefix}:u:{{{user_id}}}:reco"

    def popularity(self) -> str:
        """Sorted set: item id -> forward-decayed popularity relative to the landmark."""
        return f"{self._prefix}:{{pop}}"

    def popularity_landmark(self) -> str:
        """String: the landmark time (ms) of the forward-decayed popularity scores."""
        return f"{self._prefix}:{{pop}}:landmark"

    def trending(self) -> str:
        """Sorted set: item id -> popularity forward-decayed over the trending half-life, against
        the same landmark (recstream.core.trending)."""
        return f"{self._prefix}:{{pop}}:trend"

    def category_popularity(self, category: str) -> str:
        """Sorted set: item id -> forward-decayed popularity within one category."""
        return f"{self._prefix}:{{pop}}:cat:{category}"

    def categories(self) -> str:
        """Set: every category with a popularity key."""
        return f"{self._prefix}:{{pop}}:cats"

    def covisitation(self, item_id: str) -> str:
        """Sorted set: other item id -> co-visit count with item_id, capped to the top N."""
        return f"{self._prefix}:covis:{{{item_id}}}"

    def transitions(self, item_id: str) -> str:
        """Sorted set: item id chosen after item_id -> how often (the next signal), capped to
        the top N like the co-visits."""
        return f"{self._prefix}:next:{{{item_id}}}"

    def applied_part(self, routing_key: str, part_id: str) -> str:
        """String with a TTL: a Redis Cluster write part that ran (session_store's
        `write_by_node`); in the slot of the part's routing key (one of this layout's keys,
        each of which has a {tag})."""
        tag = routing_key[routing_key.index("{") + 1 : routing_key.index("}")]
        return f"{self._prefix}:applied:{{{tag}}}:{part_id}"

    def collab_active(self) -> str:
        """String (JSON): the collaborative model version readers use (the atomic switch)."""
        return f"{self._prefix}:{{collab}}:active"

    def collab_counter(self) -> str:
        """Counter: the last collaborative model version number handed out."""
        return f"{self._prefix}:{{collab}}:counter"

    def collab_items(self, version: int) -> str:
        """String (JSON list): a version's item ids, in the order of its factor rows."""
        return f"{self._prefix}:{{collab}}:v{version}:items"

    def collab_factors(self, version: int) -> str:
        """String (float32 bytes): a version's item factors, rows in the order of its items."""
        return f"{self._prefix}:{{collab}}:v{version}:factors"

    def collab_staged(self) -> str:
        """String (JSON): a trained version waiting to be written into the vector index."""
        return f"{self._prefix}:{{collab}}:staged"

    def collab_installing(self) -> str:
        """String with a TTL: held by the one worker writing a staged version into the index."""
        return f"{self._prefix}:{{collab}}:installing"

    def pipeline_active(self) -> str:
        """String: JSON, which pipeline version answers which request (absent: the unversioned
        one answers all). On the base namespace, outside any version's keys (`pattern`): one
        pointer for every version, kept when a version's keys are removed."""
        return f"{self.namespace}:pipelines:active"

    def pipeline_versions(self) -> str:
        """Hash: version name -> JSON (model id, first seen); beside `pipeline_active`."""
        return f"{self.namespace}:pipelines:versions"

    def untagged(self) -> dict[str, str]:
        """The global keys' names before they carried their cluster tags, each mapped to its
        name now (`RedisSessionStore.migrate_untagged_keys` renames a single Redis's); category
        and version keys are derived from these."""
        return {
            f"{self._prefix}:pop": self.popularity(),
            f"{self._prefix}:pop:landmark": self.popularity_landmark(),
            self.untagged_categories(): self.categories(),
            f"{self._prefix}:collab:active": self.collab_active(),
            self.untagged_counter(): self.collab_counter(),
            f"{self._prefix}:collab:staged": self.collab_staged(),
        }

    def untagged_categories(self) -> str:
        return f"{self._prefix}:pop:cats"

    def untagged_counter(self) -> str:
        return f"{self._prefix}:collab:counter"

    def untagged_category_popularity(self, category: str) -> str:
        return f"{self._prefix}:pop:cat:{category}"

    def untagged_collab_data(self, version: int) -> tuple[str, str]:
        """A version's item list and factors, under their untagged names."""
        return (
            f"{self._prefix}:collab:v{version}:items",
            f"{self._prefix}:collab:v{version}:factors",
        )

    def pattern(self) -> str:
        """Every key of this namespace and layout version (for tests and resets)."""
        return f"{self._prefix}:*"
