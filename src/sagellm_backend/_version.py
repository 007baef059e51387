# The 0.5 line: this project implements the engine interface of isagellm-core 0.5 (which requires
# isagellm-backend>=0.5.4.1,<0.6.0; the isagellm 0.5.4.70 CLI >=0.5.4.17,<0.6.0), and sits above every
# released isagellm-backend so that pip keeps it when the engine packages are installed beside it.
__version__ = "0.5.5.0"
