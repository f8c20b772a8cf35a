"""Induction heads written into a freshly initialised Qwen3 model.

An agent copies all the time: the question's entity into its search, a result's URL
into its visit, a value after its label into its answer. Pretrained LMs do this with
induction heads (Olsson et al., 2022): a previous-token head in one layer and, in the
next, a head that attends to the token after an earlier occurrence of the current
token and copies it. Trained from scratch, a small model reaches them only after a
long loss plateau (Aoyama et al., 2025 put it at ~T*sqrt(batch*context) tokens with
T ~ 10^5.7): far beyond a few CPU minutes, so the demo's model never copied.

``implant_induction_heads`` sets the weights of one such circuit by hand, then
training goes on as usual and may reshape it. The residual stream is split into

* one constant dimension that every token embedding carries (a content-free query
  and key for the positional head),
* a code subspace: each token's embedding holds a random unit code there (the tied
  LM head reads it back, so writing a code raises that token's logit),
* a previous-token subspace, empty in the embeddings,
* the rest, left as initialised.

Layer 0, head 0 attends to position -1 (its query and key come from the constant
dimension; their RoPE phases put the score's peak at offset 1) and writes that
token's code into the previous-token subspace. Layer 1, head 0 matches the current
token's code against every position's previous-token code, using only the rotary
pairs too slow to turn within the context, and writes the matched position's own
code back into the code subspace: the next-token prediction ``A B ... A -> B``.
"""

from __future__ import annotations

import math

import torch

CONTEXT = 4096  # positions the positional and matching scores are designed for


@torch.no_grad()
def implant_induction_heads(model: torch.nn.Module, *, seed: int = 0, code_dims: int = 36, constant: float = 0.1,
                            code_scale: float = 0.6, positional_gain: float = 3.0, match_gain: float = 2.5,
                            previous_gain: float = 0.03, copy_gain: float = 0.3, readout_gain: float = 3.0) -> None:
    """Write a previous-token head (layer 0, head 0) and an induction head (layer 1,
    head 0) into ``model``, a Qwen3 causal LM with tied embeddings, in place.

    ``code_dims`` is capped by the rotary pairs that turn less than 0.35 rad over
    ``CONTEXT`` positions (so a large ``rope_theta`` and ``head_dim`` give more).
    The gains set how sharp the two attention patterns are (``positional_gain``,
    ``match_gain``: the q/k-norm weights) and how strongly the copied code is
    written (``previous_gain``, ``copy_gain``) and read out (``readout_gain``: the
    final norm's weight on the code subspace).
    """
    cfg = model.config
    hidden, head_dim = cfg.hidden_size, cfg.head_dim
    if cfg.num_hidden_layers < 2 or not cfg.tie_word_embeddings:
        raise ValueError("induction heads need at least 2 layers and tied embeddings; "
                         f"this model has {cfg.num_hidden_layers} layers, tie_word_embeddings={cfg.tie_word_embeddings}.")
    half = head_dim // 2
    theta = model.model.rotary_emb.inv_freq.double()  # the rotary pairs' angles per position
    slow = torch.nonzero(theta * CONTEXT < 0.35).flatten().tolist()
    pairs = slow[-max(1, code_dims // 2):]  # the slowest rotary pairs carry the content match
    n_positional = slow[0] if slow else half  # the faster ones place the previous-token peak
    if len(pairs) < 8 or n_positional < 4:
        raise ValueError(f"head_dim={head_dim} with rope_theta={cfg.rope_parameters['rope_theta']:g} leaves "
                         f"{len(slow)} slow rotary pairs and {n_positional} fast ones; induction heads need 8 and 4: "
                         "raise head_dim or rope_theta.")
    slots = pairs + [i + half for i in pairs]
    width = len(slots)
    if hidden < 1 + 2 * width:
        raise ValueError(f"hidden_size={hidden} cannot hold the induction circuit's {1 + 2 * width} dimensions; "
                         f"raise hidden_size or lower code_dims={code_dims}.")
    const, codes_at, prev_at = 0, list(range(1, 1 + width)), list(range(1 + width, 1 + 2 * width))

    g = torch.Generator().manual_seed(seed)
    emb = model.get_input_embeddings().weight
    codes = torch.randn(emb.shape[0], width, generator=g)
    emb[:, const] = constant
    emb[:, codes_at] = (code_scale * codes / codes.norm(dim=1, keepdim=True)).to(emb.dtype)
    emb[:, prev_at] = 0

    first, second = model.model.layers[0], model.model.layers[1]
    for layer in (first, second):
        attn = layer.self_attn
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            proj.weight[:head_dim] = 0  # head 0 and its key/value head
        attn.o_proj.weight[:, :head_dim] = 0
        # nothing else writes into the circuit's subspaces until training says so
        attn.o_proj.weight[codes_at + prev_at, head_dim:] = 0
        layer.mlp.down_proj.weight[codes_at + prev_at] = 0

    # Previous-token head: q and k read only the constant dimension, so after q/k-norm
    # they are fixed vectors; pair i's key is turned by theta_i so the score
    # sum_i a_i cos((delta - 1) theta_i) peaks at delta = 1. Geometric weights keep the
    # other offsets at least ~0.16 of the peak below it for 4096 positions.
    attn = first.self_attn
    weights = 0.7 ** torch.arange(n_positional, dtype=torch.float64)
    weights /= weights.sum()
    for i in range(n_positional):
        a = math.sqrt(float(weights[i]))
        attn.q_proj.weight[i, const] = a
        attn.k_proj.weight[i, const] = a * math.cos(float(theta[i]))
        attn.k_proj.weight[i + half, const] = a * math.sin(float(theta[i]))
    attn.q_norm.weight[:] = positional_gain
    attn.k_norm.weight[:] = positional_gain
    for j, d in enumerate(slots):
        attn.v_proj.weight[d, codes_at[j]] = 1.0
        attn.o_proj.weight[prev_at[j], d] = previous_gain

    # Induction head: query = this token's code, key = the previous token's code.
    attn = second.self_attn
    for j, d in enumerate(slots):
        attn.q_proj.weight[d, codes_at[j]] = 1.0
        attn.k_proj.weight[d, prev_at[j]] = 1.0
        attn.v_proj.weight[d, codes_at[j]] = 1.0
        attn.o_proj.weight[codes_at[j], d] = copy_gain
    attn.q_norm.weight[slots] = match_gain
    attn.k_norm.weight[slots] = match_gain
    model.model.norm.weight[codes_at] = readout_gain
