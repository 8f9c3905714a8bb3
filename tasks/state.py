"""Training state in a Prefect block, and the tasks that load and save it."""

from __future__ import annotations

from functools import cache

from prefect import get_run_logger, task
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import BlockDocumentUpdate
from prefect.client.schemas.objects import BlockDocument
from prefect.exceptions import ObjectNotFound
from prefect.utilities.annotations import quote
from pydantic import ValidationError

from linreg.errors import StateError
from linreg.state import StateStore, TrainingState, check_expected_version, check_state_name
from tasks.runtime import IO_RETRY_DELAYS, retry_unless_permanent


class TrainingStateBlock(Block):
    """Training state of an incrementally trained linear model: data cursor, parameters
    (plain numbers, no pickle), version and metrics history."""

    _block_type_name = "Linreg Training State"
    _block_type_slug = "linreg-training-state"
    _description = "Where an incrementally trained linear model resumes from."

    state: TrainingState


@cache
def _schema_checksum() -> str:
    """The block schema's checksum: fixed for this code, and 7-25 ms of pydantic to compute."""
    return TrainingStateBlock._calculate_schema_checksum()


class PrefectBlockStateStore:
    """A :class:`linreg.state.StateStore` backed by a ``TrainingStateBlock`` document."""

    def __init__(self, name: str) -> None:
        self.name = name

    def load(self) -> TrainingState | None:
        with get_client(sync_client=True) as client:
            document = self._document(client)
        return None if document is None else self._state_of(document)

    def save(self, state: TrainingState, expected_version: int | None) -> None:
        with get_client(sync_client=True) as client:
            document = self._document(client)
            current = None if document is None else self._state_of(document)
            check_expected_version(
                self.name, None if current is None else current.version, expected_version
            )
            schema = document.block_schema if document else None
            if schema is None or schema.checksum != _schema_checksum():
                TrainingStateBlock(state=state).save(self.name, overwrite=True, _sync=True)
                return
            # One PATCH of the document's data: Block.save would also register the block
            # type and schema again and look the document up (~0.2 s more per step).
            client.update_block_document(
                document.id,
                BlockDocumentUpdate(
                    data={"state": state.model_dump(mode="json")}, merge_existing_data=False
                ),
            )

    def _document(self, client: SyncPrefectClient) -> BlockDocument | None:
        try:
            return client.read_block_document_by_name(
                self.name, TrainingStateBlock.get_block_type_slug()
            )
        except ObjectNotFound:
            return None

    def _state_of(self, document: BlockDocument) -> TrainingState:
        try:
            return TrainingState.model_validate(document.data["state"])
        except (ValidationError, KeyError, TypeError) as error:
            raise StateError(
                f"state block '{self.name}' does not hold linreg training state "
                f"({str(error).splitlines()[0]}); pass another --state-block"
            ) from None


class TaskStateStore:
    """The block store with each load and save a Prefect task (retried, shown in the UI)."""

    def __init__(self, name: str) -> None:
        self.name = check_state_name(name)
        self.store = PrefectBlockStateStore(name)

    def load(self) -> TrainingState | None:
        return load_state(self.store)

    def save(self, state: TrainingState, expected_version: int | None) -> None:
        # quote(): the task gets the state as is. Unquoted, Prefect walks every field of
        # it (metrics history, parameters) twice looking for futures before the task starts:
        # 59 ms of a 75 ms task start in a profile of one train-step.
        save_state(self.store, quote(state), expected_version)


@task(
    name="load-state",
    retries=3,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def load_state(store: StateStore) -> TrainingState | None:
    """Load the training state from its block (None if nothing is saved yet)."""
    return store.load()


@task(
    name="save-state",
    retries=3,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def save_state(store: StateStore, state: TrainingState, expected_version: int | None) -> int:
    """Save ``state`` unless another run changed the block since it was loaded."""
    store.save(state, expected_version)
    get_run_logger().info("saved state block '%s' at version %d", store.name, state.version)
    return state.version
