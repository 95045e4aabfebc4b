"""Token ids of the sequence networks (torch-free, so data code can use them).

0 is padding, item index i is token i + 1, and n_items + 1 is BERT4Rec's [MASK].
"""

from __future__ import annotations

PAD = 0
