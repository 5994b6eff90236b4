"""Random graphs and an edge-by-edge oracle of the affinity attention rule (3.17-3.18), shared
by the tests of graphwsss.nn.affinity_attention, graphwsss.nn.csr and graphwsss.nn.tiled_attention."""

import torch

from graphwsss.graphs.grid import grid_to_edges, neighbor_valid
from graphwsss.nn.affinity_attention import AffinityAttentionConv
from graphwsss.nn.tiled_attention import grid_affinity_attention


def random_grid_graph(batch, height, width, offsets, seed=0, keep=0.7, dtype=torch.float64,
                      device="cpu"):
    """Random edge weights in (0.05, 1] with random missing edges; self loops weight 1."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, offsets.shape[0], height, width)
    weight = 0.05 + 0.95 * torch.rand(shape, generator=generator, dtype=dtype)
    weight = weight * (torch.rand(shape, generator=generator) < keep)
    weight[:, 0] = 1.0  # offsets[0] is (0, 0)
    return (weight * neighbor_valid(height, width, offsets)).to(device)


def naive_attention(x, edge_index, edge_weight, w, beta, form):
    """The rule (3.17-3.18) written edge by edge with gathers: the oracle."""
    source, target = edge_index
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (unit[source] * unit[target]).sum(1)
    logits = w * cos + beta * (cos > 0) * edge_weight
    keep = (cos > 0) if form == "reference" else torch.ones_like(cos, dtype=torch.bool)
    scores = torch.where(keep, torch.exp(logits), torch.zeros_like(logits))
    total = torch.zeros(x.shape[0], dtype=x.dtype).index_add(0, target, scores)
    p = scores / total[target].clamp_min(1e-300)
    return torch.zeros_like(x).index_add(0, target, p.unsqueeze(1) * x[source]), p


def random_graph(num_nodes, num_edges, seed=0, dtype=torch.float64):
    """A random directed graph (not symmetric), no duplicate edges, self loops on all nodes."""
    generator = torch.Generator().manual_seed(seed)
    pairs = torch.randperm(num_nodes * num_nodes, generator=generator)[:num_edges]
    edge_index = torch.stack([pairs % num_nodes, pairs // num_nodes])
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    loops = torch.arange(num_nodes).repeat(2, 1)
    edge_index = torch.cat([edge_index, loops], 1)
    edge_weight = torch.rand(edge_index.shape[1], generator=generator, dtype=dtype)
    return edge_index, edge_weight


def grid_and_edge_paths(batch, height, width, channels, offsets, form, device="cpu",
                        dtype=torch.float64):
    """Run both implementations on the same random graphs; return (values, grads) of each."""
    generator = torch.Generator().manual_seed(1)
    grid_weight = random_grid_graph(batch, height, width, offsets, dtype=dtype, device=device)
    h = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype).to(device)
    h.requires_grad_(True)
    w = torch.rand(batch, generator=generator, dtype=dtype).to(device).requires_grad_(True)
    upstream = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype).to(device)
    out = grid_affinity_attention(h, grid_weight, offsets.to(device), w, 10.0, form)
    grad_h, grad_w = torch.autograd.grad((out * upstream).sum(), [h, w])

    conv = AffinityAttentionConv(form=form).to(device=device, dtype=dtype)
    edge_out, edge_grad_h, edge_grad_w = [], [], []
    for index in range(batch):
        edge_index, edge_weight = grid_to_edges(grid_weight[index], offsets.to(device))
        x = h[index].detach().flatten(1).t().clone().requires_grad_(True)
        with torch.no_grad():
            conv.weight.copy_(w[index].detach().reshape(1))
        conv.weight.grad = None
        result = conv(x, edge_index, edge_weight)
        (result * upstream[index].flatten(1).t()).sum().backward()
        edge_out.append(result.detach().t().reshape(channels, height, width))
        edge_grad_h.append(x.grad.t().reshape(channels, height, width))
        edge_grad_w.append(conv.weight.grad.reshape(()))
    return ((out.detach(), grad_h, grad_w),
            (torch.stack(edge_out), torch.stack(edge_grad_h), torch.stack(edge_grad_w)))
