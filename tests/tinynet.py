"""The tiny architecture used by the tests; copied next to test specs as arch.py."""
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(2 * width, 3)

    def forward(self, x):
        x = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.fc(x.mean(dim=(2, 3)))
