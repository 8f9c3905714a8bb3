"""Training state in a Prefect block, and the tasks that load and save it."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import BlockDocumentUpdate
from prefect.client.schemas.objects import BlockDocument
from prefect.exceptions import ObjectNotFound
from pydantic import ValidationError

from linreg.config import HyperParams
from linreg.errors import StateError
from linreg.state import TrainingState, check_expected_version, check_state_name, fingerprint
from linreg.validation import SourcePlan
from tasks.runtime import IO_RETRY_DELAYS, retry_unless_permanent


class TrainingStateBlock(Block):
    """Training state of an incrementally trained linear model: data cursor, parameters
    (plain numbers, no pickle), version and metrics history."""

    _block_type_name = "Linreg Training State"
    _block_type_slug = "linreg-training-state"
    _description = "Where an incrementally trained linear model resumes from."

    state: TrainingState


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
            if schema is None or schema.checksum != TrainingStateBlock._calculate_schema_checksum():
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


@dataclass(frozen=True)
class LoadedState:
    """The state a run starts from, and the stored version it must still find when saving."""

    state: TrainingState
    stored_version: int | None


@task(
    name="load-state",
    retries=3,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def load_state(
    state_block: str, plan: SourcePlan, hyperparams: HyperParams, reset: bool = False
) -> LoadedState:
    """Load the training state from its block, or start fresh (none saved, or --reset)."""
    logger = get_run_logger()
    check_state_name(state_block)
    stored = PrefectBlockStateStore(state_block).load()
    features = list(plan.features)
    expected = fingerprint(plan.source, features, plan.target, hyperparams.model)
    stored_version = None if stored is None else stored.version
    if stored is None or reset:
        logger.info(
            "starting a new %s model in state block '%s'%s",
            hyperparams.model,
            state_block,
            " (reset)" if stored is not None else "",
        )
        # Versions keep rising across resets, so a service never mistakes a new model for old.
        fresh = TrainingState.fresh(
            plan.source, features, plan.target, hyperparams.model, version=stored_version or 0
        )
        return LoadedState(fresh, stored_version)
    stored.check_compatible(expected, state_block)
    logger.info(
        "resuming state block '%s' at version %d (%d rows trained)",
        state_block,
        stored.version,
        stored.rows_trained,
    )
    return LoadedState(stored, stored_version)


@task(
    name="save-state",
    retries=3,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def save_state(state_block: str, state: TrainingState, expected_version: int | None) -> int:
    """Save ``state`` unless another run changed the block since it was loaded."""
    PrefectBlockStateStore(state_block).save(state, expected_version)
    get_run_logger().info("saved state block '%s' at version %d", state_block, state.version)
    return state.version
