"""The gRPC client side: ``SegmentationClient``, its channel options, the one retry policy
(shared with the PACS gateway) and the terminal progress bar of ``pulmoseg segment``.
"""
