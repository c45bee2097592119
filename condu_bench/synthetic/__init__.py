"""The embedded synthetic world (procedural domains + tiny CLIP pretraining); see domains.py, pretrain.py."""
