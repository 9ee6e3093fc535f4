namespace GptSharp.Model;

/// <summary>
/// nn.Linear weights ([out, in]) in GPT-2's Conv1D layout ([in, out]), the layout of Hugging Face files and of a
/// <c>x @ W</c> matrix product: several weights side by side along the output axis (c_attn = query|key|value), each transposed.
/// </summary>
internal static class Conv1DLayout
{
    /// <summary>Writes [in, Σ out] into <paramref name="destination"/>: destination[i, offset_p + o] = parts[p][o, i].</summary>
    public static void Transpose(IReadOnlyList<Parameter> parts, Span<float> destination)
    {
        int inFeatures = parts[0].Value.Size(1), rowLength = 0;
        foreach (var part in parts) rowLength += part.Value.Size(0);
        if (destination.Length != (long)inFeatures * rowLength) throw new ArgumentException($"destination holds {destination.Length} values, expected [{inFeatures}, {rowLength}].");
        // 32 × 32 tiles: a tile's source rows and destination rows stay in L1. Element by element, each write of
        // [in, out] would land on a new cache line and page (a row is 12 KB for GPT-2 small's c_fc): several times slower.
        const int Tile = 32;
        int column = 0;
        foreach (var part in parts)
        {
            var source = part.Value.Span;
            int outFeatures = part.Value.Size(0);
            for (int o0 = 0; o0 < outFeatures; o0 += Tile)
            {
                int on = Math.Min(Tile, outFeatures - o0);
                for (int i0 = 0; i0 < inFeatures; i0 += Tile)
                {
                    int iEnd = Math.Min(i0 + Tile, inFeatures);
                    for (int i = i0; i < iEnd; i++)
                    {
                        var target = destination.Slice(i * rowLength + column + o0, on);
                        for (int o = 0; o < on; o++) target[o] = source[(o0 + o) * inFeatures + i];
                    }
                }
            }
            column += outFeatures;
        }
    }

    /// <summary>Biases in a row (c_attn's query|key|value); a missing one (a model without qkv_bias) is zeros.</summary>
    public static void JoinBiases(IReadOnlyList<Parameter?> parts, Span<float> destination)
    {
        int partLength = destination.Length / parts.Count;
        for (int p = 0; p < parts.Count; p++)
        {
            var slice = destination.Slice(p * partLength, partLength);
            if (parts[p] is { } bias) bias.Value.Span.CopyTo(slice);
            else slice.Clear();
        }
    }
}
