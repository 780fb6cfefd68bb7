from effitrain.model.bert import (BertForClassification, BertForMLM, Encoder, analytic_flops,
                                    count_parameters, matmul_parameters)

__all__ = ["BertForClassification", "BertForMLM", "Encoder", "analytic_flops", "count_parameters",
           "matmul_parameters"]
