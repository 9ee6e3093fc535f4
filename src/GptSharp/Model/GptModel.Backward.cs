using GptSharp.Tensors;
using GptSharp.Layers;

namespace GptSharp.Model;

/// <summary>The backward pass: every forward step of <see cref="Forward"/> undone in reverse, accumulating into <see cref="Parameter.Grad"/>.</summary>
public sealed unsafe partial class GptModel
{
    /// <summary>
    /// Back-propagates <paramref name="dLogits"/> (d loss / d logits of the last training forward pass)
    /// into every parameter's gradient, accumulating as PyTorch does until <c>ZeroGrad</c>.
    /// Called by <c>Loss.Backward()</c> through the logits' <see cref="Tensor.BackwardFunction"/>.
    /// </summary>
    private void Backward(Tensor dLogits)
    {
        var a = _pending ?? throw new InvalidOperationException(
            "Backward needs the activations of a training forward pass: it was already run for this forward pass (PyTorch: 'Trying to backward through the graph a second time'), or the model was resized since.");
        int batch = _pendingBatch, seq = _pendingSeq;
        if (dLogits.Length != (long)batch * seq * Config.VocabSize)
            throw new ArgumentException($"The logits gradient has {dLogits.Length} elements; the last forward pass produced [{batch}, {seq}, {Config.VocabSize}].");
        _pending = null;
        fixed (int* ids = _pendingIds) RunBackward(a, dLogits.Data, ids, batch, seq, _pendingDropout);
    }

    /// <summary>Back-propagates the loss of the last <see cref="ForwardLoss"/> (its head chunks hold d loss / d logits).</summary>
    private void BackwardFromLoss(Tensor handle)
    {
        var a = _pending ?? throw new InvalidOperationException(
            "Backward needs the activations of a training forward pass: it was already run for this forward pass (PyTorch: 'Trying to backward through the graph a second time'), or the model was resized since.");
        _pending = null;
        fixed (int* ids = _pendingIds) RunBackward(a, null, ids, _pendingBatch, _pendingSeq, _pendingDropout);
    }

    private void RunBackward(GptActivations a, float* dLogits, int* ids, int batch, int seq, bool dropout)
    {
        int c = Config.EmbeddingDim, hidden = Config.HiddenDim, heads = Config.Heads, vocab = Config.VocabSize;
        int rows = batch * seq;
        long n = (long)rows * c;
        float* dResidual = a.DResidual!.Data, dLn = a.DLn!.Data, dProj = a.DProjection!.Data, dCtx = a.DContext!.Data;
        float* dq = a.DQuery!.Data, dk = a.DKey!.Data, dv = a.DValue!.Data, dHidden = a.DHidden!.Data;

        // logits = out_head(final_norm(x))
        if (dLogits != null)
            Kernels.LinearBackward(dLn, OutHead.Grad.Data, null, dLogits, a.FinalNorm.Data, OutHead.Value.Data, rows, c, vocab, accumulateInput: false);
        else
        {
            // A loss pass: the chunks before the last left their d(final norm) rows in dLn and their head gradient summed.
            var (start, count) = _pendingHeadChunk;
            if (start > 0)
                Kernels.ResidualForward(OutHead.Grad.Data, OutHead.Grad.Data, a.HeadGradientSum.Data, (long)vocab * c);
            Kernels.LinearBackward(dLn + (long)start * c, OutHead.Grad.Data, null, a.HeadChunk(count).Data, a.FinalNorm.Data + (long)start * c,
                OutHead.Value.Data, count, c, vocab, accumulateInput: false);
        }
        a.DResidual.Span[..checked((int)n)].Clear();
        Kernels.LayerNormBackward(dResidual, FinalNorm.Scale.Grad.Data, FinalNorm.Shift.Grad.Data, dLn, a.Residual[Blocks.Length].Data,
            FinalNorm.Scale.Value.Data, a.FinalNormMean.Data, a.FinalNormRstd.Data, rows, c);

        // dResidual is d loss / d (residual stream): a shortcut passes it on unchanged, each branch adds its part.
        for (int l = Blocks.Length - 1; l >= 0; l--)
        {
            var block = Blocks[l];
            // x = residual2 + drop(ff(norm2(residual2)))
            float* dOut = dResidual;
            if (dropout)
            {
                Kernels.DropoutBackward(dProj, dResidual, a.FeedForwardShortcutMask![l].Data, n);
                dOut = dProj;
            }
            float* gelu = a.FeedForwardGelu.Data;
            Kernels.GeluForward(gelu, a.FeedForwardHidden[l].Data, (long)rows * hidden);
            Kernels.LinearBackward(dHidden, block.FeedForwardOut.Weight.Grad.Data, block.FeedForwardOut.Bias!.Grad.Data, dOut,
                gelu, block.FeedForwardOut.Weight.Value.Data, rows, hidden, c, accumulateInput: false);
            Kernels.GeluBackward(dHidden, a.FeedForwardHidden[l].Data, dHidden, (long)rows * hidden);
            Kernels.LinearBackward(dLn, block.FeedForwardIn.Weight.Grad.Data, block.FeedForwardIn.Bias!.Grad.Data, dHidden,
                a.Ln2[l].Data, block.FeedForwardIn.Weight.Value.Data, rows, c, hidden, accumulateInput: false);
            Kernels.LayerNormBackward(dResidual, block.Norm2.Scale.Grad.Data, block.Norm2.Shift.Grad.Data, dLn, a.Residual2[l].Data,
                block.Norm2.Scale.Value.Data, a.Ln2Mean[l].Data, a.Ln2Rstd[l].Data, rows, c);

            // residual2 = x + drop(out_proj(attention(norm1(x))))
            dOut = dResidual;
            if (dropout)
            {
                Kernels.DropoutBackward(dProj, dResidual, a.AttentionShortcutMask![l].Data, n);
                dOut = dProj;
            }
            Kernels.LinearBackward(dCtx, block.OutProj.Weight.Grad.Data, block.OutProj.Bias!.Grad.Data, dOut,
                a.Context[l].Data, block.OutProj.Weight.Value.Data, rows, c, c, accumulateInput: false);
            Kernels.AttentionBackward(dq, dk, dv, a.AttentionRowDots!.Data, dCtx, a.AttentionRowStats![l].Data,
                dropout ? (uint*)a.AttentionMask![l].Data : null, dropout ? Kernels.DropoutScale(DropRateAsDouble) : 0f,
                a.Query[l].Data, a.Key[l].Data, a.Value[l].Data, a.Context[l].Data, batch, seq, c, heads);
            float* ln1 = a.Ln1[l].Data;
            Kernels.LinearBackward(dLn, block.Query.Weight.Grad.Data, BiasGrad(block.Query), dq, ln1, block.Query.Weight.Value.Data, rows, c, c, accumulateInput: false);
            Kernels.LinearBackward(dLn, block.Key.Weight.Grad.Data, BiasGrad(block.Key), dk, ln1, block.Key.Weight.Value.Data, rows, c, c, accumulateInput: true);
            Kernels.LinearBackward(dLn, block.Value.Weight.Grad.Data, BiasGrad(block.Value), dv, ln1, block.Value.Weight.Value.Data, rows, c, c, accumulateInput: true);
            Kernels.LayerNormBackward(dResidual, block.Norm1.Scale.Grad.Data, block.Norm1.Shift.Grad.Data, dLn, a.Residual[l].Data,
                block.Norm1.Scale.Value.Data, a.Ln1Mean[l].Data, a.Ln1Rstd[l].Data, rows, c);
        }

        // x = drop_emb(tok_emb(ids) + pos_emb(positions))
        if (dropout) Kernels.DropoutBackward(dResidual, dResidual, a.EmbeddingMask!.Data, n);
        Kernels.EmbeddingBackward(TokenEmbedding.Grad.Data, PositionEmbedding.Grad.Data, dResidual, ids, batch, seq, c);
    }

    private static float* BiasGrad(LinearParameters linear) => linear.Bias != null ? linear.Bias.Grad.Data : null;
}
