"""The tests' one launch of two CPU processes (gloo) for the trainer's distributed checks:
`accelerate launch --multi_gpu --num_processes 2 two_processes.py OUT` runs the DDP checks
(ddp_check.py, results in OUT/ddp) and then the FSDP2 checks (fsdp_check.py, OUT/fsdp) in the
same processes, so that the suite starts two interpreters and one rendezvous for both.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import ddp_check  # noqa: E402
import fsdp_check  # noqa: E402

if __name__ == "__main__":
    out = sys.argv[1]
    for name, check in (("ddp", ddp_check), ("fsdp", fsdp_check)):
        os.makedirs(os.path.join(out, name), exist_ok=True)
        check.main(os.path.join(out, name))
    torch.distributed.barrier()  # no rank exits with the process group alive (gloo can abort then)
    torch.distributed.destroy_process_group()
