"""PPO pieces against hand computations, the GRU reset, and learning a task that needs memory."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from rlinterp.agent.model import RecurrentAgent
from rlinterp.hooks import attached
from rlinterp.agent.ppo import RolloutCollector, compute_gae, ppo_loss, ppo_update, split_sequences
from tests.toy_envs import CueMemoryEnv


def test_gae_hand_worked_example():
    # One env, gamma = lambda = 0.5; the episode ends after step 1 (first[2] is set).
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [1.0], [0.0]])
    first = torch.tensor([[False], [False], [True]])
    adv, ret = compute_gae(rewards, values, first, torch.tensor([4.0]), torch.tensor([False]), 0.5, 0.5)
    # t=2: delta = 2 + 0.5*4 - 0 = 4                      -> A = 4
    # t=1: terminal, delta = 0 - 1 = -1                   -> A = -1
    # t=0: delta = 1 + 0.5*1 - 0.5 = 1; A = 1 + 0.25*(-1) -> A = 0.75
    assert torch.allclose(adv.squeeze(1), torch.tensor([0.75, -1.0, 4.0]))
    assert torch.allclose(ret.squeeze(1), torch.tensor([1.25, 0.0, 4.0]))


def test_ppo_loss_hand_computation(params):
    config = dataclasses.replace(params.train_agent, clip_coef=0.2, value_coef=0.5, entropy_coef=0.01,
                                 clip_value=True)
    logits = torch.zeros(2, 2)                      # pi = (0.5, 0.5) for both samples
    actions = torch.tensor([0, 1])
    old_logprobs = torch.log(torch.tensor([0.4, 0.6]))
    values, old_values = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    advantages, returns = torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.0])
    loss, stats = ppo_loss(logits, values, actions, old_logprobs, old_values, advantages, returns, config)

    a = 1 / math.sqrt(2)                            # normalised advantages: +a, -a (std with n-1)
    r0, r1 = 0.5 / 0.4, 0.5 / 0.6                   # ratios 1.25 (clipped to 1.2) and 0.833 (inside the clip)
    policy = (max(-a * r0, -a * 1.2) + max(a * r1, a * r1)) / 2
    value = 0.5 * (max((1 - 2) ** 2, (0.7 - 2) ** 2) + max(0.0, (0.3 - 0) ** 2)) / 2
    entropy = math.log(2)
    assert stats["policy_loss"].item() == pytest.approx(policy, abs=1e-5)
    assert stats["value_loss"].item() == pytest.approx(value, abs=1e-6)
    assert stats["entropy"].item() == pytest.approx(entropy, abs=1e-6)
    assert loss.item() == pytest.approx(policy + 0.5 * value - 0.01 * entropy, abs=1e-5)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)


def tiny_agent(obs_shape=(16, 16, 3), actions=5, seed=0, heads_input="hx"):
    torch.manual_seed(seed)
    return RecurrentAgent(obs_shape, actions, channels=(4, 8), blocks_per_stage=1, fc_size=16, hidden_size=8,
                          heads_input=heads_input)


def test_gru_state_reset_at_episode_start():
    agent = tiny_agent()
    steps, batch = 10, 3
    first = torch.zeros(steps, batch, dtype=torch.bool)
    first[0], first[6] = True, True
    obs_a = torch.randint(0, 256, (steps, batch, 16, 16, 3), dtype=torch.uint8)
    obs_b = obs_a.clone()
    obs_b[:6] = torch.randint(0, 256, (6, batch, 16, 16, 3), dtype=torch.uint8)  # another previous episode
    with torch.no_grad():
        out_a = agent.forward_sequence(obs_a, torch.randn(batch, 8), first)
        out_b = agent.forward_sequence(obs_b, torch.randn(batch, 8), first)
    assert not torch.allclose(out_a.hx[5], out_b.hx[5])          # the previous episodes differ...
    assert torch.equal(out_a.hx[6:], out_b.hx[6:])               # ...and the new one does not see them
    assert torch.equal(out_a.logits[6:], out_b.logits[6:])


def test_step_by_step_equals_sequence():
    agent = tiny_agent()
    steps, batch = 7, 2
    obs = torch.randint(0, 256, (steps, batch, 16, 16, 3), dtype=torch.uint8)
    first = torch.rand(steps, batch) < 0.3
    hx0 = torch.randn(batch, 8)
    with torch.no_grad():
        seq = agent.forward_sequence(obs, hx0, first)
        hx = hx0
        for t in range(steps):
            out = agent.step(obs[t], hx, first[t])
            hx = out.hx
            assert torch.allclose(out.hx, seq.hx[t], atol=1e-6)
            assert torch.allclose(out.value, seq.value[t], atol=1e-6)


def test_hook_points_read_and_patch_hx():
    """`attached` reads a hook point (fn returns None), patches it (fn returns a tensor), counts the passes as
    steps, and removes its hooks on leaving, also after an error."""
    agent = tiny_agent()
    obs = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    first = torch.ones(4, dtype=torch.bool)
    seen = []
    with attached(agent, hx=lambda step, hx: seen.append((step, hx.clone()))):
        out = agent.step(obs, agent.initial_state(4), first)
        agent.step(obs, out.hx, first)
    assert [step for step, _ in seen] == [0, 1] and torch.equal(seen[0][1], out.hx)
    with attached(agent, hx=lambda step, hx: torch.zeros_like(hx)):
        patched = agent.step(obs, agent.initial_state(4), first)
    assert torch.equal(patched.hx, torch.zeros_like(out.hx))
    assert torch.allclose(patched.logits, agent.policy_head.bias.expand(4, -1))
    with pytest.raises(RuntimeError, match="inside"), attached(agent, hx=lambda step, hx: torch.zeros_like(hx)):
        raise RuntimeError("inside")
    assert torch.equal(agent.step(obs, agent.initial_state(4), first).hx, out.hx)   # the hooks are gone
    with pytest.raises(ValueError, match="no hook point 'hxx'.*features, hx, logits, value"):
        with attached(agent, hxx=lambda step, hx: None):
            pass


@pytest.mark.parametrize("heads_input", ["hx", "features", "features_and_hx"])
def test_heads_read_what_heads_input_names(heads_input):
    """The original reads the hx alone, the non-recurrent control ignores it, the mix reads both."""
    agent = tiny_agent(heads_input=heads_input)
    obs = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    not_first = torch.zeros(4, dtype=torch.bool)
    with torch.no_grad():
        a = agent.step(obs, torch.randn(4, 8), not_first)
        b = agent.step(obs, torch.randn(4, 8), not_first)  # same frames, another incoming hx
        features = agent.encoder(obs)
    head_in = {"hx": a.hx, "features": features, "features_and_hx": torch.cat([features, a.hx], -1)}[heads_input]
    assert torch.allclose(a.logits, agent.policy_head(head_in), atol=1e-6)
    assert torch.allclose(a.value, agent.value_head(head_in).squeeze(-1), atol=1e-6)
    assert torch.equal(a.logits, b.logits) == (heads_input == "features")


def test_ppo_learns_a_task_that_needs_memory(params):
    torch.manual_seed(0)
    env = CueMemoryEnv(num_envs=32, delay=2, seed=0)
    agent = RecurrentAgent(env.obs_shape, env.num_actions, channels=(4,), blocks_per_stage=0, fc_size=16,
                           hidden_size=16)
    config = dataclasses.replace(params.train_agent, num_envs=32, num_steps=12, bptt_steps=6, epochs=4, minibatches=4,
                                 learning_rate=3e-3, gamma=0.9, entropy_coef=0.003, normalize_rewards=False)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate)
    collector = RolloutCollector(env, agent, config, torch.device("cpu"))
    success = []
    for _ in range(60):
        rollout, episodes = collector.collect()
        ppo_update(agent, optimizer, rollout, config)
        success.append(np.mean([e.completed for e in episodes]))
    assert np.mean(success[:3]) < 0.7
    assert np.mean(success[-5:]) > 0.9

    # The same agent with its memory wiped before every step can only guess.
    test_env = CueMemoryEnv(num_envs=256, delay=2, seed=1)
    hx = agent.initial_state(256)
    wins = []
    with torch.no_grad():
        for _ in range(3 * 3):
            _, obs, first = test_env.observe()
            out = agent.step(torch.from_numpy(obs), hx, torch.ones(256, dtype=torch.bool))
            hx = out.hx
            wins += [e.completed for e in test_env.act(out.logits.argmax(-1).numpy())]
    assert np.mean(wins) < 0.7


def test_training_sequences_replay_the_collected_rollout(params):
    """Re-running the GRU over bptt chunks from the stored states reproduces what the agent did in collection."""
    torch.manual_seed(0)
    env = CueMemoryEnv(num_envs=4, delay=2, seed=0)
    agent = RecurrentAgent(env.obs_shape, env.num_actions, channels=(4,), blocks_per_stage=0, fc_size=16,
                           hidden_size=16)
    config = dataclasses.replace(params.train_agent, num_envs=4, num_steps=12, bptt_steps=4, minibatches=2)
    rollout, _ = RolloutCollector(env, agent, config, torch.device("cpu")).collect()
    chunks = split_sequences(rollout.obs, 4)
    assert chunks.shape[:2] == (4, 12)
    assert torch.equal(chunks[:, 2 * 4 + 1], rollout.obs[8:12, 1])          # chunk 2 of env 1
    hx_start = split_sequences(rollout.hx_in, 4)[0]
    with torch.no_grad():
        out = agent.forward_sequence(chunks, hx_start, split_sequences(rollout.first, 4))
    logprobs = torch.distributions.Categorical(logits=out.logits).log_prob(split_sequences(rollout.actions, 4))
    assert torch.allclose(logprobs, split_sequences(rollout.logprobs, 4), atol=1e-5)
    assert torch.allclose(out.value, split_sequences(rollout.values, 4), atol=1e-5)


def test_reference_init_is_glorot_uniform_with_zero_biases():
    """`init: reference` reproduces TensorFlow's defaults: every conv and fc weight has the Glorot-uniform std
    sqrt(2 / (fan_in + fan_out)), every bias is zero; the heads are orthogonal with gains 0.01 and 1."""
    torch.manual_seed(0)
    agent = RecurrentAgent((64, 64, 3), 15, channels=(16, 32, 32), blocks_per_stage=2, fc_size=256, hidden_size=64,
                           init="reference")
    layers = [m for m in agent.encoder.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 3 * 5 + 1
    for layer in layers:
        weight = layer.weight
        receptive = weight[0, 0].numel()
        expected = math.sqrt(2.0 / ((weight.shape[1] + weight.shape[0]) * receptive))
        assert weight.std().item() == pytest.approx(expected, rel=0.05 if weight.numel() > 5000 else 0.15)
        assert weight.abs().max().item() <= math.sqrt(3) * expected + 1e-6   # uniform on [-a, a], a = sqrt(3) std
        assert torch.count_nonzero(layer.bias) == 0
    for head, gain in ((agent.policy_head, 0.01), (agent.value_head, 1.0)):
        w = head.weight
        assert torch.allclose(w @ w.T, gain ** 2 * torch.eye(w.shape[0]), atol=1e-5)
        assert torch.count_nonzero(head.bias) == 0
    # PyTorch's default conv init (std 1 / sqrt(3 fan_in)) is ~0.7x narrower here: the test tells them apart.
    torch.manual_seed(0)
    conv = RecurrentAgent((64, 64, 3), 15, channels=(16, 32, 32), init="pytorch").encoder.stages[1].conv.weight
    assert conv.std().item() == pytest.approx(1 / math.sqrt(3 * 16 * 9), rel=0.05)
    assert conv.std().item() < 0.8 * math.sqrt(2.0 / ((16 + 32) * 9))


def test_bf16_encoder_agrees_with_fp32_on_a_fixed_batch(params):
    """bf16 autocast of the encoder changes the PPO loss by < 2% and keeps the gradient's direction (cosine
    > 0.98) on a fixed batch; the GRU state, logits and value come out fp32."""
    torch.manual_seed(0)
    agent = RecurrentAgent((64, 64, 3), 15, channels=(8, 16, 16), blocks_per_stage=2, fc_size=256, hidden_size=64,
                           input_pool=2, init="reference")
    steps, batch = 8, 16
    gen = torch.Generator().manual_seed(1)
    obs = torch.randint(0, 256, (steps, batch, 64, 64, 3), dtype=torch.uint8, generator=gen)
    first = torch.rand(steps, batch, generator=gen) < 0.1
    actions = torch.randint(0, 15, (steps, batch), generator=gen)
    advantages, returns = torch.randn(steps, batch, generator=gen), torch.randn(steps, batch, generator=gen)
    with torch.no_grad():
        old = agent.forward_sequence(obs, torch.zeros(batch, 64), first)
    old_logprobs = torch.distributions.Categorical(logits=old.logits).log_prob(actions) - 0.05

    def loss_and_grad(dtype):
        agent.set_precision(dtype).zero_grad()
        out = agent.forward_sequence(obs, torch.zeros(batch, 64), first)
        assert out.hx.dtype == out.logits.dtype == out.value.dtype == torch.float32
        loss, _ = ppo_loss(out.logits, out.value, actions, old_logprobs, old.value, advantages, returns,
                           params.train_agent)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in agent.parameters()])

    loss32, grad32 = loss_and_grad(None)
    loss16, grad16 = loss_and_grad(torch.bfloat16)
    assert loss16 == pytest.approx(loss32, rel=0.02)
    assert torch.nn.functional.cosine_similarity(grad32, grad16, dim=0).item() > 0.98
    assert not torch.equal(grad32, grad16)   # bf16 really ran
