"""BOP layouts: the embedded pybullet sampler and the BlenderProc backend."""
