"""Initialization without the whole model in memory: chunked draws equal one `normal_` call, and shards filled
rank by rank equal the single-process init, whatever the number of ranks."""

from __future__ import annotations

import pytest
import torch

from polylm.config import ModelConfig
from polylm.model import PolyLM, build_model, normal_rows


@pytest.mark.parametrize("shape", [(1000, 64), (37, 48), (50, 24), (1001, 3), (5, 3), (3,), (17, 1), (256, 130)])
@pytest.mark.parametrize("max_elements", [1, 40, 1 << 24])
def test_chunks_hold_the_numbers_of_one_call_and_leave_the_generator_where_it_would(shape, max_elements):
    whole_generator, chunk_generator = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    whole = torch.empty(shape).normal_(0.0, 0.02, generator=whole_generator)
    chunks = list(normal_rows(torch.Size(shape), 0.02, chunk_generator, max_elements))
    assert [start for start, _ in chunks] == sorted({start for start, _ in chunks})
    assert torch.equal(torch.cat([values for _, values in chunks]), whole)
    assert torch.equal(torch.rand(5, generator=whole_generator), torch.rand(5, generator=chunk_generator))


@pytest.mark.parametrize("ranks", [2, 3])
def test_shards_filled_rank_by_rank_equal_the_single_process_init(ranks):
    config = ModelConfig(vocab_size=301, max_position_embeddings=40, hidden_size=24, num_layers=2, num_heads=2)
    expected = build_model(config, seed=11).state_dict()
    pieces: dict[str, list[torch.Tensor]] = {}
    for rank in range(ranks):
        with torch.device("meta"):
            model = PolyLM(config)
        model.to_empty(device="cpu")
        names = {id(param): name for name, param in model.named_parameters()}

        def rows_held(param, rank=rank, names=names):
            per = -(-param.shape[0] // ranks)  # FSDP2's torch.chunk split of dim 0
            first, end = min(rank * per, param.shape[0]), min((rank + 1) * per, param.shape[0])
            shard = torch.empty((end - first, *param.shape[1:]))
            pieces.setdefault(names[id(param)], []).append(shard)
            return shard, first, end

        model.init_weights(torch.Generator().manual_seed(11), rows_held=rows_held)
    assert set(pieces) == {name for name, _ in PolyLM(config).named_parameters()}
    for name, shards in pieces.items():
        assert torch.equal(torch.cat(shards), expected[name]), name
