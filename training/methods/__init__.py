"""The learning methods the stages use: contrastive pre-training (global and local), TCSM
mean teacher with invertible transforms, UniMatch. Pure torch functions, each taking its own
config section.
"""
