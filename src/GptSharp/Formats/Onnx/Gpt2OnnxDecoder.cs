using System.Runtime.InteropServices;
using Google.Protobuf;
using GptSharp.Formats.Onnx.Proto;
using GptSharp.Model;
using GptSharp.IO;
using DataType = GptSharp.Formats.Onnx.Proto.TensorProto.Types.DataType;
using static GptSharp.Formats.Onnx.OnnxGraphBuilder;

namespace GptSharp.Formats.Onnx;

/// <summary>
/// The model as an ONNX decoder with a KV cache, in the interface Optimum exports for GPT-2 (what transformers.js and
/// ONNX Runtime generation loops feed): inputs <c>input_ids</c>, <c>attention_mask</c> [batch, past + sequence],
/// <c>position_ids</c> (int64) and <c>past_key_values.N.key/value</c> [batch, heads, past, head_dim]; outputs
/// <c>logits</c> [batch, sequence, vocab] and <c>present.N.key/value</c> [batch, heads, past + sequence, head_dim].
/// Batch, sequence and past lengths are dynamic, so one graph runs the prompt (past length 0) and each later token.
/// Opset 17 (LayerNormalization); GELU written out in the book's tanh form; float32 weights in Conv1D layout for
/// <c>x @ W</c>, the output head used through Gemm(transB) so a tied head is not stored twice.
/// </summary>
internal static class Gpt2OnnxDecoder
{
    public const int Opset = 17;
    public const int IrVersion = 8; // the IR version of opset 17

    /// <summary>Above this many weight bytes the initializers go to <c>model.onnx_data</c> (a protobuf message is limited to 2 GB).</summary>
    public const long DefaultExternalDataThreshold = 1L << 30;

    public const string Batch = "batch_size", Sequence = "sequence_length", Past = "past_sequence_length", Total = "past_sequence_length + sequence_length";

    /// <summary>
    /// Writes <paramref name="path"/> (and <c>path + "_data"</c> when the weights exceed <paramref name="externalDataThreshold"/>),
    /// each file atomically, the data file first.
    /// </summary>
    public static void Write(GptModel model, string path, long externalDataThreshold = DefaultExternalDataThreshold)
    {
        if (model.IsQuantized) throw new ArgumentException($"{path}: the model has int8 weights; the ONNX export holds float32.");
        bool external = model.ParameterCount * sizeof(float) > externalDataThreshold;
        string dataName = Path.GetFileName(path) + "_data";
        ModelProto? proto = null;
        // Unbuffered like the safetensors writer: hundreds of MB written once, front to back (see DirectFileStream).
        if (external)
            AtomicFile.Write(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, dataName), stream => proto = Build(model, stream, dataName), unbuffered: true);
        else proto = Build(model, null, null);
        AtomicFile.Write(path, stream => proto!.WriteTo(stream), unbuffered: true);
    }

    /// <summary>The whole model message; weights into <paramref name="externalData"/> when given.</summary>
    public static ModelProto Build(GptModel model, Stream? externalData, string? externalDataName)
    {
        var c = model.Config;
        int e = c.EmbeddingDim, h = c.Heads, d = c.HeadDim;
        var g = new OnnxGraphBuilder("gptsharp_gpt2_decoder", externalData, externalDataName);

        string inputIds = g.Input("input_ids", DataType.Int64, Batch, Sequence);
        string attentionMask = g.Input("attention_mask", DataType.Int64, Batch, Total);
        string positionIds = g.Input("position_ids", DataType.Int64, Batch, Sequence);
        var past = new (string Key, string Value)[c.Layers];
        for (int i = 0; i < c.Layers; i++)
            past[i] = (g.Input($"past_key_values.{i}.key", DataType.Float, Batch, h, Past, d), g.Input($"past_key_values.{i}.value", DataType.Float, Batch, h, Past, d));

        // Which keys each query may see, once for all blocks: key j ≤ the query's absolute position P + i (causal),
        // and attention_mask[b, j] = 1 (padding). [batch, 1, sequence, total], broadcast over the heads.
        string idsShape = g.Node("Shape", [inputIds]);
        string sequence = g.Node("Gather", [idsShape, g.Int64s(true, 1)], null, Int("axis", 0));
        string pastLength = g.Node("Gather", [g.Node("Shape", [past[0].Key]), g.Int64s(true, 2)], null, Int("axis", 0));
        string total = g.Node("Add", [pastLength, sequence]);
        string one = g.Int64s(true, 1);
        string keyPositions = g.Node("Range", [g.Int64s(true, 0), total, one]);
        string queryPositions = g.Node("Range", [pastLength, total, one]);
        string causal = g.Node("LessOrEqual", [g.Node("Unsqueeze", [keyPositions, g.Int64s(false, 0)]), g.Node("Unsqueeze", [queryPositions, g.Int64s(false, 1)])]);
        string causal4 = g.Node("Unsqueeze", [causal, g.Int64s(false, 0, 1)]);
        string padding = g.Node("Unsqueeze", [g.Node("Cast", [attentionMask], null, Int("to", (long)DataType.Bool)), g.Int64s(false, 1, 2)]);
        string allowed = g.Node("And", [causal4, padding]);
        string masked = g.Scalar(float.MinValue); // exp(min − max) is 0, as for the book's −inf, without NaN in an all-padding row
        string sqrtHeadDim = g.Scalar(MathF.Sqrt(d));
        string toHeads = g.Int64s(false, 0, 0, h, d), toEmbedding = g.Int64s(false, 0, 0, e);

        string x = g.Node("Add", [
            g.Node("Gather", [g.Floats("transformer.wte.weight", model.TokenEmbedding.Value.Shape, model.TokenEmbedding.Value.Span), inputIds], null, Int("axis", 0)),
            g.Node("Gather", [g.Floats("transformer.wpe.weight", model.PositionEmbedding.Value.Shape, model.PositionEmbedding.Value.Span), positionIds], null, Int("axis", 0))]);

        for (int i = 0; i < c.Layers; i++)
        {
            var b = model.Blocks[i];
            string p = $"transformer.h.{i}.";
            string n1 = LayerNorm(g, x, b.Norm1, p + "ln_1");
            var qkvParts = new[] { b.Query, b.Key, b.Value };
            string qkv = g.Node("MatMul", [n1, Conv1D(g, p + "attn.c_attn.weight", qkvParts.Select(l => l.Weight).ToArray())]);
            if (c.QkvBias)
            {
                var bias = new float[3 * e];
                Conv1DLayout.JoinBiases(qkvParts.Select(l => l.Bias).ToArray(), bias);
                qkv = g.Node("Add", [qkv, g.Floats(p + "attn.c_attn.bias", [3 * e], bias)]);
            }
            var (q, k, v) = (g.Fresh("q"), g.Fresh("k"), g.Fresh("v"));
            g.Nodes("Split", [qkv, g.Int64s(false, e, e, e)], [q, k, v], Int("axis", -1));
            string Heads(string t) => g.Node("Transpose", [g.Node("Reshape", [t, toHeads])], null, Ints("perm", 0, 2, 1, 3));
            string presentKey = g.Node("Concat", [past[i].Key, Heads(k)], $"present.{i}.key", Int("axis", 2));
            string presentValue = g.Node("Concat", [past[i].Value, Heads(v)], $"present.{i}.value", Int("axis", 2));
            string scores = g.Node("Div", [g.Node("MatMul", [Heads(q), g.Node("Transpose", [presentKey], null, Ints("perm", 0, 1, 3, 2))]), sqrtHeadDim]);
            string weights = g.Node("Softmax", [g.Node("Where", [allowed, scores, masked])], null, Int("axis", -1));
            string context = g.Node("Reshape", [g.Node("Transpose", [g.Node("MatMul", [weights, presentValue])], null, Ints("perm", 0, 2, 1, 3)), toEmbedding]);
            x = g.Node("Add", [x, Linear(g, context, b.OutProj, p + "attn.c_proj")]);

            string n2 = LayerNorm(g, x, b.Norm2, p + "ln_2");
            string hidden = Gelu(g, Linear(g, n2, b.FeedForwardIn, p + "mlp.c_fc"));
            x = g.Node("Add", [x, Linear(g, hidden, b.FeedForwardOut, p + "mlp.c_proj")]);
        }

        string final = LayerNorm(g, x, model.FinalNorm, "transformer.ln_f");
        // Gemm wants 2-D: [batch·sequence, emb] × head[vocab, emb]ᵀ, then back to [batch, sequence, vocab].
        string flat = g.Node("Reshape", [final, g.Int64s(false, -1, e)]);
        string head = g.Node("Gemm", [flat, HeadWeight(g, model)], null, Int("transB", 1));
        g.Node("Reshape", [head, g.Node("Concat", [idsShape, g.Int64s(false, c.VocabSize)], null, Int("axis", 0))], "logits");

        g.Output("logits", DataType.Float, Batch, Sequence, c.VocabSize);
        for (int i = 0; i < c.Layers; i++)
        {
            g.Output($"present.{i}.key", DataType.Float, Batch, h, Total, d);
            g.Output($"present.{i}.value", DataType.Float, Batch, h, Total, d);
        }

        var proto = new ModelProto
        {
            IrVersion = IrVersion,
            ProducerName = "GptSharp",
            ProducerVersion = typeof(Gpt2OnnxDecoder).Assembly.GetName().Version?.ToString() ?? "",
            DocString = "GPT-2 decoder with past key/values (Optimum's GPT-2 layout), exported by GptSharp.",
            Graph = g.Graph,
        };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
        return proto;
    }

    /// <summary>The tied head is the embedding table already stored for Gather; an untied one is lm_head.weight.</summary>
    private static string HeadWeight(OnnxGraphBuilder g, GptModel model) =>
        model.IsOutHeadTiedToTokenEmbedding()
            ? "transformer.wte.weight"
            : g.Floats("lm_head.weight", model.OutHead.Value.Shape, model.OutHead.Value.Span);

    private static string LayerNorm(OnnxGraphBuilder g, string x, LayerNormParameters norm, string name) =>
        g.Node("LayerNormalization", [x, g.Floats(name + ".weight", norm.Scale.Value.Shape, norm.Scale.Value.Span), g.Floats(name + ".bias", norm.Shift.Value.Shape, norm.Shift.Value.Span)],
            null, Int("axis", -1), Float("epsilon", Layers.Kernels.LayerNormEps));

    private static string Linear(OnnxGraphBuilder g, string x, LinearParameters linear, string name)
    {
        string y = g.Node("MatMul", [x, Conv1D(g, name + ".weight", linear.Weight)]);
        return linear.Bias is { } bias ? g.Node("Add", [y, g.Floats(name + ".bias", bias.Value.Shape, bias.Value.Span)]) : y;
    }

    /// <summary>nn.Linear weights as one [in, Σ out] initializer (Conv1D layout), so the node is a plain MatMul.</summary>
    private static string Conv1D(OnnxGraphBuilder g, string name, params Parameter[] parts)
    {
        int inFeatures = parts[0].Value.Size(1), outFeatures = parts.Sum(p => p.Value.Size(0));
        var bytes = GC.AllocateUninitializedArray<byte>(checked(inFeatures * outFeatures * sizeof(float)));
        Conv1DLayout.Transpose(parts, MemoryMarshal.Cast<byte, float>(bytes.AsSpan()));
        return g.Floats(name, [inFeatures, outFeatures], bytes);
    }

    /// <summary>The book's GELU: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).</summary>
    private static string Gelu(OnnxGraphBuilder g, string x)
    {
        string cube = g.Node("Mul", [g.Node("Mul", [x, x]), x]);
        string inner = g.Node("Mul", [g.Node("Add", [x, g.Node("Mul", [cube, g.Scalar(0.044715f)])]), g.Scalar(MathF.Sqrt(2f / MathF.PI))]);
        return g.Node("Mul", [g.Node("Mul", [x, g.Scalar(0.5f)]), g.Node("Add", [g.Node("Tanh", [inner]), g.Scalar(1f)])]);
    }
}
