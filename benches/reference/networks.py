"""PyTorch twins of earthmover's networks (crates/wgan/src/models.rs): the same attribute
names and weight layouts, so earthmover's safetensors files load with `strict=True`, and the
same shapes, so timings compare like with like."""
import torch
from torch import nn

LATENT = 128


class Generator(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.fc = nn.Linear(LATENT, 4 * 4 * 4 * dim)
        up = dict(kernel_size=5, stride=2, padding=2, output_padding=1)
        self.deconv1 = nn.ConvTranspose2d(4 * dim, 2 * dim, **up)
        self.deconv2 = nn.ConvTranspose2d(2 * dim, dim, **up)
        self.deconv3 = nn.ConvTranspose2d(dim, 1, **up)

    def forward(self, z):
        x = torch.relu(self.fc(z)).view(-1, 4 * self.dim, 4, 4)
        x = torch.relu(self.deconv1(x))[:, :, :7, :7]
        x = torch.relu(self.deconv2(x))
        return torch.sigmoid(self.deconv3(x))


class Critic(nn.Module):
    def __init__(self, dim):
        super().__init__()
        down = dict(kernel_size=5, stride=2, padding=2)
        self.conv1 = nn.Conv2d(1, dim, **down)
        self.conv2 = nn.Conv2d(dim, 2 * dim, **down)
        self.conv3 = nn.Conv2d(2 * dim, 4 * dim, **down)
        self.fc = nn.Linear(4 * 4 * 4 * dim, 1)

    def forward(self, x):
        x = nn.functional.leaky_relu(self.conv1(x), 0.2)
        x = nn.functional.leaky_relu(self.conv2(x), 0.2)
        x = nn.functional.leaky_relu(self.conv3(x), 0.2)
        return self.fc(x.flatten(1))


class MlpGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(LATENT, 128), nn.BatchNorm1d(128)
        self.fc2, self.bn2 = nn.Linear(128, 256), nn.BatchNorm1d(256)
        self.fc3 = nn.Linear(256, 784)

    def forward(self, z):
        x = torch.relu(self.bn1(self.fc1(z)))
        x = torch.relu(self.bn2(self.fc2(x)))
        return torch.tanh(self.fc3(x)).view(-1, 1, 28, 28)
