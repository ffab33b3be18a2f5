import pytest
import torch

from ganforge.config import TrainConfig
from ganforge.losses import LOSSES


def _loss(kind="non-saturating", real_target=1.0, fake_target=0.0):
    return LOSSES[kind](TrainConfig(loss=kind, real_label=real_target, fake_label=fake_target).validate())


def _linear_d(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1))


@pytest.mark.parametrize("real_target,fake_target", [(1.0, 0.0), (0.0, 1.0)])
def test_a_d_step_moves_d_towards_its_targets(real_target, fake_target):
    D = _linear_d()
    real, fake = torch.randn(64, 16) + 1, torch.randn(64, 16) - 1
    before = torch.sigmoid(D(real)).mean().item(), torch.sigmoid(D(fake)).mean().item()
    opt = torch.optim.SGD(D.parameters(), lr=0.1)
    _loss("non-saturating", real_target, fake_target).d_term(D(real).squeeze(1), D(fake).squeeze(1)).backward()
    opt.step()
    after = torch.sigmoid(D(real)).mean().item(), torch.sigmoid(D(fake)).mean().item()
    sign = 1 if real_target > fake_target else -1  # which way "more real" points
    assert sign * (after[0] - before[0]) > 0  # D's vote on real images moved towards "real"
    assert sign * (after[1] - before[1]) < 0  # and on forgeries towards "fake"


@pytest.mark.parametrize("kind", ["non-saturating", "minimax"])
@pytest.mark.parametrize("real_target,fake_target", [(1.0, 0.0), (0.0, 1.0)])
def test_a_g_step_makes_forgeries_look_more_real(kind, real_target, fake_target):
    D = _linear_d()
    fake = (torch.randn(64, 16) - 1).requires_grad_()
    before = torch.sigmoid(D(fake)).mean().item()
    _loss(kind, real_target, fake_target).g_term(D(fake).squeeze(1)).backward()
    with torch.no_grad():
        moved = fake - 0.5 * fake.grad
    after = torch.sigmoid(D(moved)).mean().item()
    sign = 1 if real_target > fake_target else -1
    assert sign * (after - before) > 0


def test_minimax_saturates_where_non_saturating_does_not():
    logits = torch.full((8,), -6.0, requires_grad=True)  # D is sure these are fakes
    (g_minimax,) = torch.autograd.grad(_loss("minimax").g_term(logits), logits)
    (g_ns,) = torch.autograd.grad(_loss("non-saturating").g_term(logits), logits)
    assert g_minimax.abs().mean() < 0.01 * g_ns.abs().mean()


def test_d_loss_value():
    logits = torch.zeros(4)  # D(x) = 0.5 everywhere: log 2 per term
    assert _loss().d_term(logits, logits).item() == pytest.approx(2 * torch.log(torch.tensor(2.0)).item())
