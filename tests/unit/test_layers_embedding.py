"""Hand-computed cases for the fused embedding collection and the first-order terms."""

import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recfunnel.layers import embedding as embedding_module
from recfunnel.layers.embedding import EmbeddingCollection, LinearTerms
from recfunnel.layers.fused_lookup import can_fuse
from recfunnel.layers.inputs import ModelSchema, SequenceField, SparseField, TensorBatch
from recfunnel.training.trainer import Trainer, TrainerConfig

SCHEMA = ModelSchema(
    sparse=(SparseField("user", 4), SparseField("item", 5)),
    dense=("x",),
    bags=(SparseField("tags", 6), SparseField("topics", 3)),
    sequences=(SequenceField("hist_item", "item"),),
    max_sequence_length=3,
)


def make_batch() -> TensorBatch:
    return TensorBatch(
        sparse=torch.tensor([[2, 3], [1, 4], [3, 0]]),
        dense=torch.tensor([[0.5], [-1.0], [2.0]]),
        bags={"tags": torch.tensor([[2, 5, 0], [0, 0, 0], [4, 0, 0]]),
              "topics": torch.tensor([[1, 2], [2, 0], [0, 0]])},
        sequences={"hist_item": torch.tensor([[4, 2, 0], [0, 0, 0], [1, 1, 3]])},
        label=torch.tensor([1.0, 0.0, 1.0]),
    )


def by_hand(collection: EmbeddingCollection, batch: TensorBatch) -> torch.Tensor:
    """(N, F, width) rows read field by field, bags averaged over their non-padding ids."""
    w, bag_w = collection.table.weight, collection.bag_table.weight
    fields = [w[batch.sparse[:, 0]], w[4 + batch.sparse[:, 1]]]  # user rows start at 0, item rows at 4
    for start, name in ((0, "tags"), (6, "topics")):  # the bag table: 6 tag rows, then 3 topic rows
        ids = batch.bags[name]
        pooled = []
        for row in ids:
            real = row[row > 0]
            pooled.append(bag_w[start + real].mean(0) if len(real) else torch.zeros(w.shape[1], dtype=w.dtype))
        fields.append(torch.stack(pooled))
    return torch.stack(fields, 1)


@pytest.fixture(params=["dense", "embedding_bag"])
def bag_pooling(request, monkeypatch):
    """Run a test with small bags pooled by the dense product and, again, by embedding_bag."""
    if request.param == "embedding_bag":
        monkeypatch.setattr(embedding_module, "DENSE_BAG_MAX_VOCAB", 0)
    return request.param


def test_one_table_holds_every_field_and_one_every_bag_at_its_offset():
    collection = EmbeddingCollection(SCHEMA, 3)
    assert collection.table.weight.shape == (4 + 5, 3)
    assert collection.bag_table.weight.shape == (6 + 3, 3)
    assert collection.offsets.tolist() == [0, 4]
    assert collection.bag_offsets.tolist() == [0, 6]
    assert collection.dense_bags
    no_bags = ModelSchema(sparse=SCHEMA.sparse, dense=SCHEMA.dense)
    assert EmbeddingCollection(no_bags, 3).bag_table is None
    with pytest.raises(ValueError, match="no bags"):
        EmbeddingCollection(no_bags, 3).bags(make_batch())


def test_fields_are_the_rows_and_the_bag_means(bag_pooling):
    torch.manual_seed(0)
    collection = EmbeddingCollection(SCHEMA, 3).double()
    assert collection.dense_bags == (bag_pooling == "dense")
    batch = make_batch()
    torch.testing.assert_close(collection.fields(batch), by_hand(collection, batch))
    # a bag of only padding ids is the zero vector, not a mean over nothing
    assert collection.fields(batch)[1, 2].abs().sum() == 0


def test_first_order_weights_share_the_lookup_and_start_at_zero(bag_pooling):
    torch.manual_seed(0)
    collection = EmbeddingCollection(SCHEMA, 3, first_order=True).double()
    for table in (collection.table, collection.bag_table):
        assert table.weight.shape[1] == 4
        assert table.weight[:, 3].abs().sum() == 0
        with torch.no_grad():
            table.weight[:, 3].normal_()
    batch = make_batch()
    emb, first = collection.fields_and_first_order(batch)
    rows = by_hand(collection, batch)
    torch.testing.assert_close(emb, rows[..., :3])
    torch.testing.assert_close(first, rows[..., 3].sum(1))
    with pytest.raises(ValueError, match="first-order"):
        EmbeddingCollection(SCHEMA, 3).fields_and_first_order(batch)


def test_gradients_equal_those_of_the_field_by_field_lookup(bag_pooling):
    torch.manual_seed(0)
    collection = EmbeddingCollection(SCHEMA, 3, first_order=True).double()
    batch = make_batch()
    probe = torch.randn(3, 4, 3, dtype=torch.float64)
    weights = (collection.table.weight, collection.bag_table.weight)
    emb, first = collection.fields_and_first_order(batch)
    ((emb * probe).sum() + (first * torch.arange(3.0, dtype=torch.float64)).sum()).backward()
    fused = [w.grad.clone() for w in weights]
    for w in weights:
        w.grad = None
    rows = by_hand(collection, batch)
    ((rows[..., :3] * probe).sum() + (rows[..., 3].sum(1) * torch.arange(3.0, dtype=torch.float64)).sum()).backward()
    for got, w in zip(fused, weights, strict=True):
        torch.testing.assert_close(got, w.grad)
    untouched = torch.ones(9, dtype=torch.bool)
    untouched[[2, 1, 3, 4 + 3, 4 + 4, 4 + 0]] = False
    assert fused[0][untouched].abs().sum() == 0
    bag_untouched = torch.ones(9, dtype=torch.bool)
    bag_untouched[[2, 5, 4, 6 + 1, 6 + 2]] = False  # padding rows 0 and 6 + 0 get no gradient either
    assert fused[1][bag_untouched].abs().sum() == 0


def test_sequences_read_the_target_fields_rows_and_zero_their_padding():
    collection = EmbeddingCollection(SCHEMA, 3, first_order=True)
    batch = make_batch()
    seq = collection.sequence(batch)
    assert seq.shape == (3, 3, 3)  # the first-order column is not part of a sequence embedding
    torch.testing.assert_close(seq[0, 0], collection.table.weight[4 + 4, :3])
    assert seq[1].abs().sum() == 0
    torch.testing.assert_close(collection.target(batch), collection.table.weight[4 + batch.sparse[:, 1], :3])


def test_linear_terms_sum_id_weights_bag_means_dense_map_and_bias():
    torch.manual_seed(0)
    linear = LinearTerms(SCHEMA).double()
    with torch.no_grad():
        linear.ids.table.weight.normal_()
        linear.ids.bag_table.weight.normal_()
        linear.dense.weight.fill_(2.0)
        linear.bias.fill_(0.25)
    batch = make_batch()
    batch.dense = batch.dense.double()
    ids_part = by_hand(linear.ids, batch)[..., 0].sum(1)
    torch.testing.assert_close(linear(batch), ids_part + 2.0 * batch.dense[:, 0] + 0.25)
    dense_only = LinearTerms(SCHEMA, ids=False).double()
    with torch.no_grad():
        dense_only.dense.weight.fill_(2.0)
    torch.testing.assert_close(dense_only(batch), 2.0 * batch.dense[:, 0])


def test_without_sequences_keeps_every_other_input():
    batch = make_batch()
    lean = batch.without_sequences()
    assert lean.sequences == {} and lean.sequence_age is None
    assert lean.sparse is batch.sparse and lean.bags is batch.bags and lean.label is batch.label
    assert batch.sequences  # the original is untouched


class _Recorder(torch.nn.Module):
    """A model that notes whether its training batches carried sequences."""

    def __init__(self, needs_sequences: bool):
        super().__init__()
        self.needs_sequences = needs_sequences
        self.bias = torch.nn.Parameter(torch.zeros(1))
        self.saw_sequences: set[bool] = set()

    def forward(self, batch: TensorBatch) -> torch.Tensor:
        self.saw_sequences.add(bool(batch.sequences))
        return self.bias.expand(len(batch))


@pytest.mark.parametrize("needs", [False, True])
def test_the_trainer_shuffles_sequences_only_for_models_that_read_them(needs):
    model = _Recorder(needs)
    Trainer(TrainerConfig(epochs=1, batch_size=2)).fit(model, make_batch(), make_batch())
    assert model.saw_sequences == {needs}


@pytest.mark.parametrize("index", [torch.tensor([2, 0]), torch.tensor([True, False, True]), slice(0, 2)])
def test_select_takes_positions_masks_and_slices(index):
    batch = make_batch()
    rows = torch.arange(3)[index]
    picked = batch.select(index)
    torch.testing.assert_close(picked.sparse, batch.sparse[rows])
    torch.testing.assert_close(picked.dense, batch.dense[rows])
    torch.testing.assert_close(picked.bags["tags"], batch.bags["tags"][rows])
    torch.testing.assert_close(picked.sequences["hist_item"], batch.sequences["hist_item"][rows])
    torch.testing.assert_close(picked.label, batch.label[rows])


def _twins(schema: ModelSchema, first_order: bool) -> tuple[EmbeddingCollection, EmbeddingCollection]:
    """The same float32 collection twice: fused kernel, and ATen ops only."""
    torch.manual_seed(0)
    fused = EmbeddingCollection(schema, 5, first_order=first_order)
    with torch.no_grad():
        for table in (fused.table, fused.bag_table):
            if table is not None:
                table.weight.normal_()  # first-order column too: it starts at 0
    reference = EmbeddingCollection(schema, 5, first_order=first_order, fused=False)
    reference.load_state_dict(fused.state_dict())
    return fused, reference


def _grads(collection: EmbeddingCollection, outputs: tuple[torch.Tensor, ...], probes) -> list[torch.Tensor]:
    loss = sum((o * p).sum() for o, p in zip(outputs, probes, strict=True) if o is not None)
    loss.backward()
    tables = [t for t in (collection.table, collection.bag_table) if t is not None]
    return [t.weight.grad for t in tables]


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("bags", [True, False])
def test_the_fused_lookup_matches_the_aten_lookup_in_values_and_gradients(first_order, bags):
    schema = SCHEMA if bags else ModelSchema(sparse=SCHEMA.sparse, dense=SCHEMA.dense)
    fused, reference = _twins(schema, first_order)
    assert fused.fused and can_fuse(fused.table.weight)
    batch = make_batch()
    got, want = fused.lookup(batch), reference.lookup(batch)
    torch.testing.assert_close(got[0], want[0])
    if first_order:
        torch.testing.assert_close(got[1], want[1])
    else:
        assert got[1] is None and want[1] is None
    probes = (torch.randn_like(want[0]), torch.randn(3))
    for g, w in zip(_grads(fused, got, probes), _grads(reference, want, probes), strict=True):
        torch.testing.assert_close(g, w)


def test_the_fused_fm_part_is_first_order_plus_pairwise_interactions_with_their_gradients():
    fused, reference = _twins(SCHEMA, True)
    batch = make_batch()
    emb, fm = fused.fields_and_fm(batch)
    ref_emb, ref_first = reference.fields_and_first_order(batch)
    pairwise = sum((ref_emb[:, i] * ref_emb[:, j]).sum(-1) for i in range(4) for j in range(i + 1, 4))
    torch.testing.assert_close(emb, ref_emb)
    torch.testing.assert_close(fm, ref_first + pairwise)
    ref_emb2, ref_fm = reference.fields_and_fm(batch)  # the ATen path of the same method
    torch.testing.assert_close(ref_fm, fm)
    probes = (torch.randn_like(emb), torch.randn(3))
    for g, w in zip(_grads(fused, (emb, fm), probes), _grads(reference, (ref_emb2, ref_fm), probes), strict=True):
        torch.testing.assert_close(g, w)
    # one output unused: autograd hands the kernel no gradient for it
    for collection in (fused, reference):
        collection.zero_grad(set_to_none=True)
    fused.fields_and_fm(batch)[1].sum().backward()
    reference.fields_and_fm(batch)[1].sum().backward()
    torch.testing.assert_close(fused.table.weight.grad, reference.table.weight.grad)
    with pytest.raises(ValueError, match="first-order"):
        EmbeddingCollection(SCHEMA, 3).fields_and_fm(batch)


@pytest.mark.parametrize("where", ["sparse", "sparse_negative", "bag"])
def test_the_fused_lookup_rejects_ids_outside_their_fields_vocabulary(where):
    fused, _ = _twins(SCHEMA, True)
    batch = make_batch()
    if where == "sparse":
        batch.sparse[1, 0] = 4  # user vocabulary is 4: row 4 would be the item field's first row
    elif where == "sparse_negative":
        batch.sparse[2, 1] = -1
    else:
        batch.bags["topics"][0, 1] = 3
    with pytest.raises(IndexError, match="row"):
        fused.lookup(batch)


def test_other_dtypes_take_the_aten_path():
    collection = EmbeddingCollection(SCHEMA, 3).double()
    assert not can_fuse(collection.table.weight)
    assert collection.fields(make_batch()).dtype == torch.float64


def test_without_the_kernels_every_lookup_takes_the_aten_path(monkeypatch):
    from recfunnel.layers import fused_lookup

    fused, reference = _twins(SCHEMA, True)
    monkeypatch.setattr(fused_lookup, "_kernels", lambda: None)
    assert not fused_lookup.can_fuse(fused.table.weight)
    batch = make_batch()
    emb, fm = fused.fields_and_fm(batch)
    assert "FusedFieldLookup" not in type(emb.grad_fn).__name__
    ref_emb, ref_fm = reference.fields_and_fm(batch)
    torch.testing.assert_close(emb, ref_emb)
    torch.testing.assert_close(fm, ref_fm)


def test_a_kernel_module_that_fails_to_load_falls_back_with_a_warning(monkeypatch):
    import builtins

    from recfunnel.layers import fused_lookup

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if args and args[2] and "_lookup_kernels" in args[2]:
            raise RuntimeError("cannot cache function: no locator available")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    monkeypatch.delitem(sys.modules, "recfunnel.layers._lookup_kernels", raising=False)
    fused_lookup._kernels.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no locator"):
            assert fused_lookup._kernels() is None
    finally:
        monkeypatch.undo()
        fused_lookup._kernels.cache_clear()
    assert fused_lookup._kernels() is not None


@st.composite
def _lookup_cases(draw):
    """A random schema (1-4 fields, 0-3 bags of random widths) and a batch of valid ids, padding included."""
    vocabs = draw(st.lists(st.integers(2, 9), min_size=1, max_size=4))
    bag_vocabs = draw(st.lists(st.integers(2, 7), max_size=3))
    n = draw(st.integers(0, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    widths = draw(st.lists(st.integers(0, 4), min_size=len(bag_vocabs), max_size=len(bag_vocabs)))
    return vocabs, bag_vocabs, widths, n, seed


@settings(max_examples=60, deadline=None)
@given(case=_lookup_cases(), first_order=st.booleans(), with_fm=st.booleans())
def test_the_fused_lookup_matches_the_aten_lookup_on_random_schemas(case, first_order, with_fm):
    vocabs, bag_vocabs, widths, n, seed = case
    schema = ModelSchema(sparse=tuple(SparseField(f"s{i}", v) for i, v in enumerate(vocabs)),
                         bags=tuple(SparseField(f"b{j}", v) for j, v in enumerate(bag_vocabs)))
    gen = torch.Generator().manual_seed(seed)
    batch = TensorBatch(
        sparse=torch.stack([torch.randint(0, v, (n,), generator=gen) for v in vocabs], 1),
        dense=torch.zeros(n, 0),
        bags={f"b{j}": torch.randint(0, v, (n, w), generator=gen)  # id 0 = padding, often drawn
              for j, (v, w) in enumerate(zip(bag_vocabs, widths, strict=True))})
    torch.manual_seed(seed)
    fused = EmbeddingCollection(schema, 3, first_order=first_order)
    with torch.no_grad():
        for table in (fused.table, fused.bag_table):
            if table is not None:
                table.weight.normal_(generator=gen)
    reference = EmbeddingCollection(schema, 3, first_order=first_order, fused=False)
    reference.load_state_dict(fused.state_dict())
    if with_fm and first_order:
        got, want = fused.fields_and_fm(batch), reference.fields_and_fm(batch)
    else:
        got, want = fused.lookup(batch), reference.lookup(batch)
    assert "FusedFieldLookup" in type(got[0].grad_fn).__name__
    torch.testing.assert_close(got[0], want[0])
    if want[1] is not None:
        torch.testing.assert_close(got[1], want[1])
    probes = (torch.randn(want[0].shape, generator=gen), torch.randn(n, generator=gen))
    for g, w in zip(_grads(fused, got, probes), _grads(reference, want, probes), strict=True):
        torch.testing.assert_close(g, w)
